"""Velocity features through the real API: a champion on every view served by uvicorn, every
scored payment updating the payment state (the embedded profile: a writer process the
API starts, with unwritten payments merged into every read), and the
skew job recomputing every logged feature offline: no mismatch on a healthy run.
The writer process killed mid-run is started again, and no payment is lost.

The payments go in time order, one at a time, as a gateway would send them: a
payment's velocity then includes every earlier one, exactly as the offline table
does. A retried payment (same transaction id) is answered again and counted once.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import psutil
import pytest

from client.replay import payment_body
from data.calendar import Calendar
from features.store import open_store
from features.velocity import CUSTOMER_VELOCITY_FEATURES, TERMINAL_VELOCITY_FEATURES
from fraudlab.settings import Settings
from monitoring.freshness import run_freshness
from monitoring.policy import load_policy
from monitoring.skew import run_skew
from pipelines.registry import CHAMPION
from pipelines.world import WorldBuilder, WorldRecipe
from serving.prediction_log import read_predictions
from serving.velocity_state import PaymentStates, transaction_key
from tests.conftest import TEST_SIMULATION, TEST_TRAINING
from tests.conftest import World as SessionWorld
from tests.serving.live_server import LiveServer, at_simulated_time, furnish, server_home

CUTOFF_DAY = 65
SPAN = pd.Timedelta(hours=12)  # ~1,000 payments after the cutoff
VELOCITY = [*CUSTOMER_VELOCITY_FEATURES, *TERMINAL_VELOCITY_FEATURES]
SERVICE = "fraud_v3_candidates"  # every view: both velocity views are served


@dataclass(frozen=True)
class Served:
    server: LiveServer
    payments: pd.DataFrame
    start: pd.Timestamp


@pytest.fixture(scope="module")
def served(world: SessionWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("velocity")
    home = root / "registry"
    home.mkdir()
    for linked in ("data", "feature_data"):
        (home / linked).symlink_to(getattr(world.settings, f"{linked}_dir"))
    training = TEST_TRAINING.model_copy(
        update={"cutoff_day": CUTOFF_DAY, "feature_service": SERVICE}
    )
    base = Settings(home=home, simulation=TEST_SIMULATION, training=training)
    start = Calendar.of_file(base.transactions_path).start(CUTOFF_DAY)
    settings = at_simulated_time(server_home(base, root / "api", False), start + SPAN, SPAN)
    server = LiveServer(settings)
    go_file = root / "go"
    server.start(go_file)
    try:
        recipe = WorldRecipe(
            models=("logreg",), cutoff_day=CUTOFF_DAY, aliases={CHAMPION: "logreg"}
        )
        trained = WorldBuilder(base, recipe).build()
        furnish(base, settings)
        go_file.touch()
        server.wait_ready()
        tx = trained.transactions
        window = (tx["event_timestamp"] >= start) & (tx["event_timestamp"] < start + SPAN)
        payments = tx[window].sort_values(["event_timestamp", "transaction_id"])
        for row in payments.itertuples():
            response = server.score(payment_body(row))
            assert response.status_code == 200, response.text
        yield Served(server, payments.reset_index(drop=True), start)
    finally:
        go_file.touch()
        if server.running:
            server.stop()


def _logged(server: LiveServer, transaction_id: str, since: pd.Timestamp) -> pd.Series:
    deadline = time.monotonic() + 10
    while True:
        rows = read_predictions(server.log_path, since, since + pd.Timedelta(minutes=5))
        mine = rows[rows["transaction_id"] == transaction_id]
        if len(mine) or time.monotonic() > deadline:
            assert len(mine) == 1, f"{transaction_id} not in the log"
            return mine.iloc[0]
        time.sleep(0.1)


def test_served_velocity_equals_the_offline_recomputation(served: Served, tmp_path) -> None:
    server = served.server
    logged = read_predictions(server.log_path, served.start, served.start + SPAN)
    deadline = pd.Timestamp.now() + pd.Timedelta(seconds=10)
    while len(logged) < len(served.payments) and pd.Timestamp.now() < deadline:
        logged = read_predictions(server.log_path, served.start, served.start + SPAN)
    assert len(logged) == len(served.payments)
    # The payments must exercise the features: bursts, busy terminals, second terminals.
    assert (logged["customer_payments_1h"] > 0).sum() >= 20
    assert (logged["terminal_payments_1h"] > 0).sum() >= 20
    assert (logged["customer_terminals_today"] > 1).sum() >= 20
    # A lookup that overran the online budget on a loaded machine is answered on an
    # explicit, counted fallback (NaN): not a skew. Those few are left out.
    degraded = logged["fallback"] == 1
    assert degraded.mean() <= 0.01, logged.loc[degraded, "fallback_features"].head()
    logged = logged[~degraded].reset_index(drop=True)
    store = open_store(server.settings)
    features = [c for c in logged.columns if c in set(VELOCITY)] + ["terminal_fraud_rate_30d"]
    finding = run_skew(
        store,
        logged,
        features,
        tmp_path,
        load_policy().jobs.skew,
        service_name=SERVICE,
        sample_rows=len(logged),
    )
    assert set(VELOCITY) <= set(features)
    assert finding.metrics["max_mismatch_rate"] == 0.0, finding.summary
    # Every answer logged its features' ages: inline updates have no lag, and the
    # cutoff's snapshots are at most the span old; no objective is broken.
    assert (logged["age__customer_velocity"] == 0).all()
    assert logged["age__terminal_risk"].between(0, SPAN.total_seconds()).all()
    fresh = run_freshness(logged, load_policy().jobs.freshness, tmp_path)
    assert fresh.metrics["stale_view_count"] == 0, fresh.summary


def test_a_retried_payment_is_answered_alike_and_counted_once(served: Served) -> None:
    server = served.server
    last = served.payments.iloc[-1]
    body = payment_body(last)
    first = server.score(body).json()
    again = server.score(body).json()
    assert first["score"] == again["score"]  # the retry sees the history its first try saw
    later = body | {
        "transaction_id": f"{last.transaction_id}-next",
        "timestamp": (last.event_timestamp + pd.Timedelta(seconds=30)).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ"
        ),
    }
    assert server.score(later).status_code == 200
    metrics = server.metrics()
    next_row = _logged(server, later["transaction_id"], last.event_timestamp)
    before = served.payments[
        (served.payments["customer_id"] == last.customer_id)
        & (served.payments["event_timestamp"] > last.event_timestamp - pd.Timedelta(minutes=10))
    ]
    assert next_row["customer_payments_10m"] == len(before)  # the retries counted once
    assert 'fraudlab_feature_age_seconds_count{view="customer_velocity"}' in metrics


def _state_writers(server: LiveServer) -> list[psutil.Process]:
    assert server.process is not None
    found = []
    for child in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def test_a_killed_state_writer_is_started_again_and_nothing_is_lost(served: Served) -> None:
    """The fault is the writer process dying (SIGKILL); the payments after it must still
    reach the online store, written by the writer the API starts in its place."""
    server = served.server
    (writer,) = _state_writers(server)
    writer.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10  # dead, until the API reaps it on its next batch
    while writer.is_running() and writer.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the writer outlived SIGKILL"
        time.sleep(0.05)
    last = served.payments.iloc[-1]
    body = payment_body(last) | {
        "transaction_id": f"{last.transaction_id}-after-the-kill",
        "timestamp": (last.event_timestamp + pd.Timedelta(seconds=45)).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ"
        ),
    }
    assert server.score(body).status_code == 200  # answered whatever the writer's state
    wanted = transaction_key(body["transaction_id"])
    states = PaymentStates(open_store(server.settings))
    deadline = time.monotonic() + 60  # a new writer imports Feast before its first write
    while True:
        stored = {
            kind: wanted in state.ids
            for kind, entity in (("customer", last.customer_id), ("terminal", last.terminal_id))
            for state, _ in states.read(kind, [int(entity)])
        }
        if all(stored.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert stored == {"customer": True, "terminal": True}, server.tail()
    (again,) = _state_writers(server)
    assert again.pid != writer.pid
