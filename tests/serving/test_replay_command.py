"""`fraudlab replay` against the live API: numbers that add up, and bad arguments
refused with one clear line."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest
from typer.testing import CliRunner

from client.replay import load_payments, replay_payments
from fraudlab.cli import app
from fraudlab.settings import get_settings
from tests.serving.conftest import ADMIN_TOKEN, Fleet, ServingWorld
from tests.serving.live_server import free_port, settings_env

runner = CliRunner()
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, live_world: ServingWorld) -> Iterator[None]:
    for name, value in settings_env(live_world.settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FRAUDLAB_CONFIG", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_replay_sends_the_future_and_sums_up(fleet: Fleet, live_world: ServingWorld) -> None:
    payments = load_payments(live_world.settings, limit=300)
    summary = replay_payments(fleet.api.url, payments, rate=0, concurrency=4)
    fleet.api.answered += summary.answered
    assert summary.requests == summary.answered == 300 and summary.errors == {}
    assert sum(sum(d.values()) for d in summary.decisions.values()) == 300
    assert summary.versions == {f"champion v{live_world.champion}": 300}
    assert summary.fallbacks < 300 * 0.1  # the future's customers were mostly seen before
    assert 0 < summary.latency_ms["p50"] <= summary.latency_ms["p95"]
    assert summary.latency_ms["p95"] <= summary.latency_ms["p99"]
    print(f"replay: p50 {summary.latency_ms['p50']:.2f} ms, {summary.achieved_rate:.0f} req/s")


def test_replay_holds_the_requested_rate(fleet: Fleet, live_world: ServingWorld) -> None:
    payments = load_payments(live_world.settings, limit=50)
    summary = replay_payments(fleet.api.url, payments, rate=100, concurrency=2)
    fleet.api.answered += summary.answered
    assert summary.error_count == 0
    assert 0.45 <= summary.elapsed_seconds <= 2.0  # 50 payments at 100/s: about 0.5 s


def test_replay_command_holds_the_clock_and_prints_a_summary(
    fleet: Fleet, live_world: ServingWorld, cli_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAUDLAB_SERVING__ADMIN_TOKEN", ADMIN_TOKEN)
    get_settings.cache_clear()
    try:
        result = runner.invoke(
            app, ["replay", "--url", fleet.api.url, "--limit", "40", "--rate", "0"]
        )
        print(result.output)
        assert result.exit_code == 0, result.output
        fleet.api.answered += 40
        held = fleet.api.client.get("/admin/clock", headers=AUTH).json()
        last = pd.Timestamp(load_payments(live_world.settings, limit=40)[-1]["timestamp"])
        assert held["held"] and pd.Timestamp(held["now"]) == last  # simulated time advanced
    finally:  # the fleet's other tests send the whole future: back to its end
        fleet.api.client.put(
            "/admin/clock", json={"now": live_world.clock.isoformat()}, headers=AUTH
        )
    assert "answered (200)" in result.output and "40" in result.output
    assert "latency p50/p95/p99" in result.output and "decisions (champion)" in result.output


def test_replay_of_simulated_time_without_the_admin_token_is_refused(
    fleet: Fleet, cli_env: None
) -> None:
    result = runner.invoke(app, ["replay", "--url", fleet.api.url, "--limit", "5"])
    _refused(result, "needs the admin token")


def _refused(result, message: str) -> None:
    assert result.exit_code != 0
    assert message in " ".join(result.output.split())  # rich wraps long lines
    assert "Traceback" not in result.output


def test_replay_to_an_unreachable_url_is_refused(cli_env: None) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    live = ["--limit", "5", "--keep-clock"]  # no admin token here: about the URL alone
    _refused(runner.invoke(app, ["replay", "--url", url, *live]), "unreachable")
    _refused(runner.invoke(app, ["replay", "--url", "ftp://x", *live]), "not an http")


def test_replay_beyond_the_data_is_refused(cli_env: None) -> None:
    result = runner.invoke(app, ["replay", "--from-day", "500", "--url", "http://127.0.0.1:9"])
    _refused(result, "from day 500 is outside the data (days 0..74)")
