"""Two uvicorn workers behind one port behave as one service: /metrics on either reports
the totals of both, the prediction log holds one row per answer from both, a moved
alias and an admin routing change reach both. A real server (serving.process.
running_server, workers=2) on a home of its own with its own copy of the registry.

Every response names the worker that answered (`Fraudlab-Worker`), so the tests can
insist that both took part. Requests go over a new connection each: a connection stays
with the worker that accepted it, and the kernel hands new ones to either.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fraudlab.settings import Settings
from pipelines.registry import CHAMPION, connect, set_alias
from serving.admin import PROPAGATION_HEADER
from serving.prediction_log import count_rows
from serving.process import WORKER_HEADER, running_server
from serving.routing import shared_routing_path
from tests.serving.conftest import ADMIN_TOKEN, LATENESS, POLL_SECONDS, ServingWorld
from tests.serving.live_server import REPO_ROOT, furnish, server_home, settings_env

WORKERS = 2
SENDERS = 4  # concurrent senders: both workers busy at once, both writing the log
# A liveness guard for "every worker got it", not a speed target: a poll, a model load,
# on a shared 2-core machine that also runs the other servers of the session.
SETTLE_SECONDS = 60.0


@dataclass(frozen=True)
class Answer:
    status: int
    worker: str
    version: str | None
    route: str | None


@dataclass
class TwoWorkers:
    url: str
    settings: Settings
    stop: Callable[[], None]
    answered: int = 0  # 200s from /v1/score: what the prediction log must hold
    seen: set[str] = field(default_factory=set)  # workers that answered anything

    def client(self) -> httpx.Client:
        """A client that opens a new connection per request (no keep-alive)."""
        limits = httpx.Limits(max_keepalive_connections=0)
        return httpx.Client(base_url=self.url, timeout=30.0, limits=limits)

    def score(self, payments: list[dict]) -> list[Answer]:
        with self.client() as client, ThreadPoolExecutor(SENDERS) as pool:
            responses = list(pool.map(lambda p: client.post("/v1/score", json=p), payments))
        answers = []
        for response in responses:
            body = response.json() if response.status_code == 200 else {}
            version = body.get("model", {}).get("version")
            answers.append(
                Answer(response.status_code, _worker(response), version, body.get("route"))
            )
        self.answered += sum(a.status == 200 for a in answers)
        self.seen |= {a.worker for a in answers}
        return answers

    def admin(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with self.client() as client:
            return client.request(method, path, json=body, headers=headers)

    def settle(self, payments: list[dict], wanted: Callable[[Answer], bool]) -> list[Answer]:
        """Score batches until every worker has given an answer that is `wanted`."""
        deadline = time.monotonic() + SETTLE_SECONDS
        got: set[str] = set()
        while len(got) < WORKERS:
            assert time.monotonic() < deadline, f"only workers {got} got there"
            answers = self.score(payments)
            assert {a.status for a in answers} == {200}
            got |= {a.worker for a in answers if wanted(a)}
        return answers


def _worker(response: httpx.Response) -> str:
    return response.headers[WORKER_HEADER]


@pytest.fixture(scope="module")
def two_workers(live_world: ServingWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    root = tmp_path_factory.mktemp("workers")
    settings = server_home(live_world.settings, root / "home", own_registry=True)
    serving = settings.serving.model_copy(
        update={
            "workers": WORKERS,
            "alias_poll_seconds": POLL_SECONDS,
            "admin_token": ADMIN_TOKEN,
            # Many small commits from both workers: the log's lock is contended for real.
            "log_flush_seconds": 0.01,
            "log_batch_rows": 5,
            "max_payment_lateness_seconds": LATENESS.total_seconds(),
        }
    )
    settings = settings.model_copy(update={"serving": serving})
    furnish(live_world.settings, settings)
    with ExitStack() as stack:
        url = stack.enter_context(
            running_server(
                env=settings_env(settings),
                workers=WORKERS,
                log_file=root / "server.out",
                cwd=REPO_ROOT,
            )
        )
        # Held through one worker: the other must accept the future's payments at once.
        held = httpx.put(
            f"{url}/admin/clock",
            json={"now": live_world.clock.isoformat()},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert held.status_code == 200, held.text
        yield TwoWorkers(url, settings, stack.close)


def _samples(text: str, name: str) -> dict[tuple, float]:
    """A metric's samples by their labels, from the text exposition."""
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def test_metrics_on_any_worker_report_the_totals_of_all_workers(
    two_workers: TwoWorkers, live_world: ServingWorld
) -> None:
    answers = two_workers.score(live_world.payments(300))
    assert {a.status for a in answers} == {200}
    by_worker = Counter(a.worker for a in answers)
    assert len(by_worker) == WORKERS, by_worker  # both answered: totals must add them up
    scraped_by: set[str] = set()
    with two_workers.client() as client:
        for _ in range(50):
            response = client.get("/metrics")
            scraped_by.add(_worker(response))
            requests = _samples(response.text, "fraudlab_requests_total")
            assert sum(requests.values()) == two_workers.answered, (by_worker, requests)
            latency = _samples(response.text, "fraudlab_stage_seconds_count")
            assert latency[(("stage", "total"),)] == two_workers.answered
            versions = _samples(response.text, "fraudlab_model_version")
            assert versions[(("alias", "champion"),)] == float(live_world.champion)
            assert _samples(response.text, "fraudlab_shadow_queue_depth")  # still exported
            if len(scraped_by) == WORKERS:
                break
    assert len(scraped_by) == WORKERS  # the same totals, whichever worker answered


def test_the_log_holds_one_row_per_answer_while_both_workers_write(
    two_workers: TwoWorkers, live_world: ServingWorld
) -> None:
    answers = two_workers.score(live_world.payments(400, skip=300))
    assert {a.status for a in answers} == {200}
    assert len({a.worker for a in answers}) == WORKERS
    path = two_workers.settings.prediction_log_path
    deadline = time.monotonic() + SETTLE_SECONDS
    while count_rows(path) < two_workers.answered and time.monotonic() < deadline:
        time.sleep(0.1)
    assert count_rows(path) == two_workers.answered


def test_a_moved_champion_alias_reaches_every_worker(
    two_workers: TwoWorkers, live_world: ServingWorld
) -> None:
    registry = connect(two_workers.settings)
    model = two_workers.settings.training.model_name
    payments = live_world.payments(40, skip=1_000)
    try:
        set_alias(registry, model, CHAMPION, live_world.challenger)
        reload = two_workers.admin("POST", "/admin/reload")
        assert reload.json()["loaded"]["champion"] == live_world.challenger  # this one: now
        note = reload.headers[PROPAGATION_HEADER]
        assert f"worker {_worker(reload)} now" in note and "within one alias poll" in note
        two_workers.settle(payments, lambda a: a.version == live_world.challenger)
        after = two_workers.score(live_world.payments(200, skip=1_100))
        assert {a.version for a in after} == {live_world.challenger}
    finally:  # later tests expect the original champion on every worker
        set_alias(registry, model, CHAMPION, live_world.champion)
    two_workers.settle(payments, lambda a: a.version == live_world.champion)
    after = two_workers.score(live_world.payments(200, skip=1_300))
    assert {a.version for a in after} == {live_world.champion}


def test_an_admin_routing_change_is_applied_by_every_worker(
    two_workers: TwoWorkers, live_world: ServingWorld
) -> None:
    payments = live_world.payments(40, skip=1_500)
    changed = two_workers.admin("POST", "/admin/routing", {"canary_share": 1.0})
    assert changed.json() == {"canary_share": 1.0, "shadow": True, "breaker": "off"}
    assert "within one alias poll" in changed.headers[PROPAGATION_HEADER]
    assert _routing_row(shared_routing_path(two_workers.settings.home)) == (1.0, 1)  # durable
    two_workers.settle(payments, lambda a: a.route == "canary")
    after = two_workers.score(live_world.payments(200, skip=1_600))
    assert {a.route for a in after} == {"canary"} and len({a.worker for a in after}) == WORKERS
    # A partial change keeps what another worker set: only `shadow` moves here.
    assert two_workers.admin("POST", "/admin/routing", {"shadow": False}).json() == {
        "canary_share": 1.0,
        "shadow": False,
        "breaker": "off",
    }
    restored = two_workers.admin("POST", "/admin/routing", {"canary_share": 0.0, "shadow": True})
    assert restored.json() == {"canary_share": 0.0, "shadow": True, "breaker": "off"}
    two_workers.settle(payments, lambda a: a.route == "champion")
    assert {a.route for a in two_workers.score(payments)} == {"champion"}


def test_a_clean_stop_leaves_exactly_one_log_row_per_answer(two_workers: TwoWorkers) -> None:
    assert two_workers.seen and len(two_workers.seen) == WORKERS
    two_workers.stop()  # SIGTERM: uvicorn stops both workers, each flushes its log
    assert count_rows(two_workers.settings.prediction_log_path) == two_workers.answered


def _routing_row(path: Path) -> tuple[float, int]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT canary_share, shadow FROM routing").fetchone()
    finally:
        conn.close()
