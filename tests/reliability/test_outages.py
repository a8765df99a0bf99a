"""The scoring API while its dependencies fail: Redis (the online store) stops under
load and comes back; the MLflow tracking server dies and comes back. Every answer
must stay a 200, degraded answers must say so, and recovery must need no restart.

Run with `pytest -s` to see the measured numbers.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field

import httpx

from serving.features import OVER_BUDGET, STORE_ERROR
from serving.prediction_log.record import PREDICTIONS
from tests.reliability.conftest import ADMIN_TOKEN, ProductionWorld
from tests.serving.conftest import logged_rows

RATE = 50.0  # requests per second the load thread aims at
OUTAGE_SECONDS = 3.0
AFTER_SECONDS = 3.0
RECOVERY_BOUND_SECONDS = 5.0  # restart -> first clean answer, re-materialization included
MAX_REQUESTS = 2_000  # the load loop's hard bound


@dataclass(frozen=True)
class Answer:
    sent: float  # time.monotonic() when the request left
    seconds: float  # how long the answer took
    status: int  # -1: no HTTP answer at all
    fallback_features: tuple[str, ...] = ()
    request_id: str | None = None  # the API's id, for 200s

    @property
    def fallback(self) -> bool:
        return bool(self.fallback_features)

    @property
    def store_fallback(self) -> bool:
        """A fallback the store caused (unreachable, or features missing), not one the
        20 ms budget gave a lookup that a busy 2-core machine ran slowly."""
        return self.fallback and OVER_BUDGET not in self.fallback_features


@dataclass
class Load:
    """Payments sent one after another at about RATE per second from a thread."""

    world: ProductionWorld
    answers: list[Answer] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name="load", daemon=True)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the load thread did not stop"

    def _run(self) -> None:
        payments = self.world.payments(MAX_REQUESTS)
        for body in payments:
            if self.stop.is_set():
                return
            sent = time.monotonic()
            request_id = None
            try:
                response = self.world.api.post("/v1/score", json=body)
                status = response.status_code
                features = tuple(response.json()["fallback_features"]) if status == 200 else ()
                request_id = response.json()["request_id"] if status == 200 else None
            except httpx.HTTPError:
                status, features = -1, ()
            answer = Answer(sent, time.monotonic() - sent, status, features, request_id)
            self.answers.append(answer)
            self.stop.wait(max(0.0, 1 / RATE - (time.monotonic() - sent)))

    def between(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if start <= a.sent < end]


def metric(world: ProductionWorld, name: str, **labels: str) -> float:
    """One sample of the API's /metrics (0 when it was never incremented)."""
    text = world.api.get("/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}\{{{re.escape(want)}\}} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_redis_down_mid_load_gives_fallbacks_not_errors_and_recovers(
    production_world: ProductionWorld,
) -> None:
    world = production_world
    fallbacks_before = metric(world, "fraudlab_feature_fallbacks_total", reason=STORE_ERROR)
    with Load(world) as load:
        time.sleep(2.0)
        killed = time.monotonic()  # from here a lookup may meet a dying store
        world.redis.stop(signal.SIGKILL)  # ... until it returns, once Redis has exited
        down = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        up = time.monotonic()  # restart begins: from here, answers may be clean again
        world.redis.start()
        started = time.monotonic()
        world.rematerialize()
        materialized = time.monotonic()
        time.sleep(AFTER_SECONDS)
    end = time.monotonic()

    answers = load.answers
    failures = [a for a in answers if a.status != 200]
    # A request in flight at the kill may go either way: judge only those answered
    # before the signal went out, and those sent once Redis had exited. (Answers of the
    # moments between, while stop() waited for the exit, were once judged "before":
    # a run here had a store-error fallback among them.)
    before = [a for a in load.between(0.0, killed) if a.sent + a.seconds < killed]
    during = load.between(down, up)
    after = load.between(up, end)
    store_errors = [a for a in answers if STORE_ERROR in a.fallback_features]
    clean_after = [a for a in after if not a.fallback]
    recovery = clean_after[0].sent - up if clean_after else float("inf")
    counted = (
        metric(world, "fraudlab_feature_fallbacks_total", reason=STORE_ERROR) - fallbacks_before
    )
    print(
        f"\n[redis outage] sent={len(answers)} failures={len(failures)} "
        f"before={len(before)} during={len(during)} after={len(after)} "
        f"store_error_fallbacks={len(store_errors)} counted_in_metrics={counted:.0f} "
        f"all_fallbacks={sum(a.fallback for a in answers)} "
        f"redis_start_s={started - up:.2f} rematerialize_s={materialized - started:.2f} "
        f"recovery_s={recovery:.2f} "
        f"max_latency_during_s={max((a.seconds for a in during), default=0):.3f}"
    )
    assert not failures, failures[:5]
    # Before the kill the store answered everything. A lookup the budget cut short is
    # allowed in a few answers: CI failed here once, the other worker running the drift
    # story, on a fallback among the 97 answers before the kill (which one the assertion
    # did not say; now it does). The world's entities are all materialized, so on a busy
    # machine the budget is the one cause left that is not a defect.
    assert before and not [a.fallback_features for a in before if a.store_fallback]
    assert sum(a.fallback for a in before) <= 0.1 * len(before), before
    assert len(during) >= 5, "too few requests reached the API while Redis was down"
    assert all(STORE_ERROR in a.fallback_features for a in during), during[:5]
    assert recovery <= RECOVERY_BOUND_SECONDS
    last_second = load.between(end - 1.0, end)
    assert last_second and not [a.fallback_features for a in last_second if a.store_fallback]
    assert counted == len(store_errors)


def test_mlflow_down_keeps_models_and_reload_fails_safe(
    production_world: ProductionWorld,
) -> None:
    world = production_world
    failures_before = metric(world, "fraudlab_model_reload_failures_total", alias="registry")
    world.mlflow.stop(signal.SIGKILL)
    down = time.monotonic()

    statuses = [world.api.post("/v1/score", json=b).status_code for b in world.payments(50)]
    started = time.monotonic()
    reload = world.admin("/admin/reload")
    reload_seconds = time.monotonic() - started
    failures = metric(world, "fraudlab_model_reload_failures_total", alias="registry")
    ready = world.api.get("/readyz")
    print(
        f"\n[mlflow outage] scored={len(statuses)} non_200={sum(s != 200 for s in statuses)} "
        f"reload_status={reload.status_code} reload_s={reload_seconds:.2f} "
        f"reload_failures_delta={failures - failures_before:.0f} readyz={ready.status_code} "
        f"outage_s={time.monotonic() - down:.2f}"
    )
    assert statuses == [200] * len(statuses)
    assert reload.status_code == 200, reload.text
    assert reload.json()["loaded"]["champion"] == world.champion
    assert "registry" in reload.json()["errors"]
    assert failures > failures_before
    assert ready.status_code == 200, ready.text

    world.mlflow.start()
    restarted = time.monotonic()
    reload = world.admin("/admin/reload")
    back_seconds = time.monotonic() - restarted
    print(f"[mlflow back] reload_status={reload.status_code} reload_s={back_seconds:.2f}")
    assert reload.status_code == 200, reload.text
    assert reload.json() == {
        "loaded": {"champion": world.champion, "challenger": None},
        "errors": {},
    }


def _probe_latencies(world: ProductionWorld, stop: threading.Event) -> dict[str, list[float]]:
    """/healthz, /metrics and an admin read, one after another until stopped, timed."""
    seconds: dict[str, list[float]] = {"healthz": [], "metrics": [], "admin": []}
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=str(world.api.base_url), timeout=30.0) as probe:
        while not stop.is_set():
            for name, call in (
                ("healthz", lambda: probe.get("/healthz")),
                ("metrics", lambda: probe.get("/metrics")),
                ("admin", lambda: probe.get("/admin/routing", headers=headers)),
            ):
                sent = time.monotonic()
                assert call().status_code == 200, name
                seconds[name].append(time.monotonic() - sent)
            stop.wait(0.05)
    return seconds


def test_a_paused_redis_gives_fallbacks_within_the_budget_and_the_api_stays_responsive(
    production_world: ProductionWorld,
) -> None:
    """Issue 11, finding 3: SIGSTOP the redis-server (its socket still accepts, nothing
    answers), score through the pause, SIGCONT. Before: no socket timeout, the lookup on
    the event loop: every request of the worker, /healthz and /metrics included, hung
    for the whole pause."""
    world = production_world
    budget = world.settings.serving.online_budget_ms / 1e3
    assert world.redis.process is not None
    stop_probes = threading.Event()
    probed: dict[str, list[float]] = {}
    prober = threading.Thread(
        target=lambda: probed.update(_probe_latencies(world, stop_probes)), daemon=True
    )
    with Load(world) as load:
        time.sleep(1.0)
        prober.start()
        os.killpg(world.redis.process.pid, signal.SIGSTOP)
        paused = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        resumed = time.monotonic()
        os.killpg(world.redis.process.pid, signal.SIGCONT)
        time.sleep(AFTER_SECONDS)
        stop_probes.set()
        prober.join(timeout=30)
    during = [a for a in load.between(paused, resumed) if a.sent + a.seconds < resumed]
    after = load.between(resumed, time.monotonic())
    clean_after = [a for a in after if not a.fallback]
    recovery = clean_after[0].sent - resumed if clean_after else float("inf")
    answered = [a.request_id for a in load.answers if a.request_id]
    logged = logged_rows(world.settings.prediction_log_path, PREDICTIONS, answered)
    worst = {name: max(times, default=float("inf")) for name, times in probed.items()}
    during_ms = sorted(1e3 * a.seconds for a in during)
    p99_ms = during_ms[int(0.99 * (len(during_ms) - 1))] if during_ms else float("inf")
    print(
        f"\n[redis paused] sent={len(load.answers)} during={len(during)} "
        f"non_200={sum(a.status != 200 for a in load.answers)} "
        f"fallback_during={sum(STORE_ERROR in a.fallback_features for a in during)} "
        f"p99_during_ms={p99_ms:.1f} max_during_ms={max(during_ms, default=0):.1f} "
        f"budget_ms={budget * 1e3:.0f} recovery_s={recovery:.2f} "
        + " ".join(f"worst_{k}_ms={1e3 * v:.1f}" for k, v in worst.items())
        + f" answered={len(answered)} logged={len(logged)}"
    )
    assert all(a.status == 200 for a in load.answers), [a for a in load.answers if a.status != 200][
        :5
    ]
    assert len(during) >= 20, "too few requests reached the API while Redis was paused"
    assert all(STORE_ERROR in a.fallback_features for a in during), during[:5]
    # The budget plus the request's own work on a busy 2-core machine.
    assert p99_ms <= 1e3 * budget + 150, during_ms[-5:]
    assert all(v < 1.0 for v in worst.values()), worst
    assert recovery <= RECOVERY_BOUND_SECONDS
    assert {row["request_id"] for row in logged} == set(answered)
