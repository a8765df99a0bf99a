"""The one runner every scenario shares.

A run builds its own world (data, features, champion) in the run folder, starts the
real scoring API, and then, day by simulated day: the batch job fills the online store,
the day's payments go through the API, and at midnight the monitor runs over the day
and the policy acts (through the registry and the API's admin endpoints). The fault is
switched on at its injection day; a fault an engineer would revert is reverted the
morning after the policy's alert. Time is simulated, so a month takes minutes.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from client.admin import ServingAdmin
from client.replay import ReplaySummary, payments_of_days, replay_payments
from data.calendar import Calendar
from data.validate import load_transactions
from features.definitions import feature_table_path
from features.store import materialize, open_store
from fraudlab.settings import Settings
from monitoring.decisions import MonitorRun
from monitoring.label_feed import settle_served
from monitoring.policy import Policy, load_policy
from monitoring.runner import run_monitor
from monitoring.window import Window
from scenarios.catalog import Scenario
from scenarios.stream import StreamWorkerProcess, stream_settings
from scenarios.timeline import DayRecord, Event, monitor_figures, traffic_figures
from scenarios.world import Overrides, Scale, WorldSpec, prepare_world
from serving.prediction_log import count_between, read_predictions
from serving.process import running_server

Say = Callable[[str], None]
TRIAL_FIGURES = ("agreement_auc", "canary_score_psi", "canary_breaches")
REPLAY_CONCURRENCY = 8


@dataclass
class RunContext:
    """What a fault may touch: the world's settings, stores and the serving admin API."""

    settings: Settings
    spec: WorldSpec
    transactions: pd.DataFrame
    admin: ServingAdmin
    worker: StreamWorkerProcess | None = None  # the story runs the payment stream

    @cached_property
    def calendar(self) -> Calendar:
        return Calendar.of(self.transactions["event_timestamp"])

    def day_start(self, day: int) -> pd.Timestamp:
        """Midnight (UTC) that opens scenario day `day` (0 = the champion's cutoff day)."""
        return self.calendar.start(self.spec.cutoff_day + day)

    def materialize(self, day: int) -> None:
        with quiet_output():
            materialize(self.settings, end=self.day_start(day).to_pydatetime())

    def offline_snapshot(self, view: str, day: int) -> pd.DataFrame:
        table = pd.read_parquet(feature_table_path(self.settings.feature_data_dir, view))
        return table[table["event_timestamp"] == self.day_start(day)].copy()

    def settle_labels(self) -> None:
        """The world answers what the service decided so far (monitoring/label_feed.py):
        the label feed the monitor and any retraining read from then on."""
        with quiet_output():
            settle_served(self.settings, self.transactions)

    def write_online(self, view: str, rows: pd.DataFrame) -> None:
        with quiet_output():
            open_store(self.settings).write_to_online_store(view, rows)


@dataclass
class RunResult:
    scenario: Scenario
    run_dir: Path
    settings: Settings
    spec: WorldSpec
    records: list[DayRecord]
    events: list[Event] = field(default_factory=list)
    # Per challenger version, the guardrail's latest label-free figures of its trial.
    trials: dict[str, dict[str, Any]] = field(default_factory=dict)
    world_seconds: float = 0.0
    seconds: float = 0.0


@contextlib.contextmanager
def quiet_output() -> Iterator[None]:
    """Feast prints progress bars and tables; inside a scenario they bury the story."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


class ScoringAPI:
    """The real API as a child process; a changed configuration is a redeploy."""

    def __init__(self, config_path: Path, settings: Settings) -> None:
        self.base_env = {
            "FRAUDLAB_CONFIG": str(config_path),
            "FRAUDLAB_HOME": str(settings.home),
            "FRAUDLAB_PROFILE": "embedded",
        }
        self.port = settings.serving.port
        self.log_file = config_path.parent / "serve.log"
        self.env: dict[str, str] | None = None
        self._stack = contextlib.ExitStack()
        self.url = ""

    def deploy(self, fault_env: dict[str, str]) -> bool:
        """Run with these extra settings; restarts only when they changed."""
        env = self.base_env | fault_env
        if env == self.env:
            return False
        self._stack.close()
        self._stack = contextlib.ExitStack()
        # A generous bound: model loading is slow on a busy 2-core machine.
        server = running_server(env=env, port=self.port, log_file=self.log_file, ready_timeout=240)
        self.url = self._stack.enter_context(server)
        self.env = env
        return True

    def close(self) -> None:
        self._stack.close()


def run_scenario(
    scenario: Scenario,
    scale: Scale,
    seed: int,
    runs_root: Path,
    say: Say = print,
    world_cache: Path | None = None,
) -> RunResult:
    started = time.perf_counter()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = runs_root / scenario.name / stamp
    run_dir.mkdir(parents=True, exist_ok=False)
    fault = scenario.fault
    spec = WorldSpec(scale, seed, **fault.world_options(scenario.inject_day))
    overrides: Overrides = {}
    if fault.stream:
        overrides["stream"] = stream_settings(f"{scenario.name}-{stamp}")
    # The minute jobs wait for the log before each run: flush it often.
    overrides["serving"] = {"log_flush_seconds": 0.005}
    cache = world_cache or runs_root / ".worlds"
    if not (cache / spec.key / "world.yaml").exists():
        say(f"building the {spec.key} world once: data, features, champion (cached in {cache})")
    with quiet_output():
        config_path, settings = prepare_world(spec, run_dir, cache, overrides)

    transactions = load_transactions(settings)
    result = RunResult(scenario, run_dir, settings, spec, [])
    result.world_seconds = time.perf_counter() - started
    ctx = RunContext(settings, spec, transactions, ServingAdmin(settings))
    api = ScoringAPI(config_path, settings)
    try:
        if fault.stream:
            ctx.worker = StreamWorkerProcess(settings, api.base_env, run_dir / "stream-worker.log")
            ctx.worker.check_reachable()
            ctx.worker.start()
        _run_days(scenario, ctx, api, result, say)
    finally:
        api.close()
        if ctx.worker is not None:
            ctx.worker.close()
    result.seconds = time.perf_counter() - started
    return result


@dataclass
class _Story:
    """Where the run is in its story, and the events so far."""

    result: RunResult
    fixed_day: int | None = None
    detected: bool = False
    injected: bool = False
    detected_at: pd.Timestamp | None = None
    fixed: bool = False  # a minute-level fix (Fault.response_minutes) has landed
    recovered: bool = False
    today: list[Event] = field(default_factory=list)

    def note(self, day: int, at: pd.Timestamp, kind: str, text: str) -> None:
        event = Event(day, at.isoformat(), kind, text)
        self.today.append(event)
        self.result.events.append(event)

    def detect(self, day: int, at: pd.Timestamp, rule: str, detector: str) -> None:
        if not self.detected:
            self.detected, self.detected_at = True, at
            self.note(day, at, "detection", f"{detector} job, rule {rule}")
            fault = self.result.scenario.fault
            if fault.operator_fix and fault.response_minutes is None:
                self.fixed_day = day + 1  # the revert ships the morning after the alert


def _run_days(
    scenario: Scenario, ctx: RunContext, api: ScoringAPI, result: RunResult, say: Say
) -> None:
    policy = load_policy(ctx.settings.monitoring.policy_path)
    fault, inject = scenario.fault, scenario.inject_day
    story = _Story(result)
    days = scenario.full_days if ctx.spec.scale == "full" and scenario.full_days else scenario.days
    for day in range(days):
        opens = ctx.day_start(day)
        closes = opens + pd.Timedelta(days=1)
        story.today = []
        fixed = story.fixed_day is not None and day >= story.fixed_day
        active = inject is not None and day >= inject and not fixed
        if day == inject and not fault.injects_at_hour:
            story.injected = True
            story.note(day, opens, "injection", scenario.what_broke.split(". ")[0] + ".")
        if day == story.fixed_day:
            story.note(day, opens, "fix", "the on-call engineer reverts the change")
        env = fault.serving_env(active)
        if api.deploy(env) and day > 0:
            story.note(day, opens, "deploy", f"scoring API redeployed with {env or 'defaults'}")
        if text := fault.feed_online_store(ctx, day, active):
            story.note(day, opens, "note", text)
        if day == inject and not fault.injects_at_hour and (text := fault.on_inject(ctx, day)):
            story.note(day, opens, "note", text)
        clock = time.perf_counter()
        between = _BetweenWaves(scenario, ctx, policy, story, day)
        summary = _replay_day(ctx, api, day, fault.amount_scale(active), between)
        replay_s = time.perf_counter() - clock
        # The world's labels for what was decided (a declined fraud is never charged
        # back), at midnight, before the monitor and any retraining read them.
        ctx.settle_labels()
        record = _monitor_day(ctx, policy, day, opens, summary)
        record.decisions = between.decisions + record.decisions
        record.minute_runs = between.runs
        record.seconds = {
            "replay": replay_s - between.seconds,
            "minute jobs": between.seconds,
            "monitor": time.perf_counter() - clock - replay_s,
        }
        for d in record.decisions:
            if d["taken"] and d["action"] != "alert":
                story.note(day, closes, "action", f"{d['action']} ({d['rule']}): {d['outcome']}")
        caught = [d for d in record.decisions if d["job"] == scenario.detector]
        if caught and story.injected:
            story.detect(day, closes, caught[0]["rule"], scenario.detector or "")
        record.events = story.today
        result.records.append(record)
        say(_day_line(record))


class _BetweenWaves:
    """What happens between the waves of a day's replay (client/replay.py): a running
    stream worker catches up; and in a story with minute checks, each check due by the
    next wave's first payment runs, the fault starts at its hour, and the operator's
    fix lands its response time after the alert."""

    def __init__(
        self, scenario: Scenario, ctx: RunContext, policy: Policy, story: _Story, day: int
    ) -> None:
        self.scenario, self.ctx, self.policy, self.story, self.day = (
            scenario,
            ctx,
            policy,
            story,
            day,
        )
        opens = ctx.day_start(day)
        self.every = pd.Timedelta(
            minutes=scenario.minute_jobs_every or policy.minute_jobs.every_minutes
        )
        self.window = pd.Timedelta(minutes=policy.minute_jobs.window_minutes)
        # A story told by the daily jobs alone skips the minute jobs (half a day's time).
        self.next_check = opens + (self.every if scenario.minute_jobs else pd.Timedelta(days=2))
        fault = scenario.fault
        self.injection_at = (
            opens + pd.Timedelta(hours=fault.injects_at_hour)
            if day == scenario.inject_day and fault.injects_at_hour
            else None
        )
        self.decisions: list[dict[str, Any]] = []
        self.runs = 0  # minute-job runs today
        self.seconds = 0.0  # ... and their wall-clock time
        self.known_logged = 0  # payments sent so far that the log is known to hold
        self.sent: list[pd.Timestamp] = []  # event times of the day's payments sent so far

    @property
    def clock_step(self) -> pd.Timedelta | None:
        """A stream story moves the service clock every simulated minute: the stream's
        lag is timed by it (serving/payment_stream.py), so held at the day's last
        payment all day, a stopped worker would never look behind."""
        return pd.Timedelta(minutes=1) if self.ctx.worker is not None else None

    def __call__(self, wave: list[dict[str, Any]]) -> None:
        if self.ctx.worker is not None:
            self.ctx.worker.catch_up(wave)
        self.until(pd.Timestamp(wave[0]["timestamp"]))
        self.sent += [pd.Timestamp(body["timestamp"]) for body in wave]

    def until(self, at: pd.Timestamp) -> None:
        """Everything due at or before `at`, in time order."""
        story, fault = self.story, self.scenario.fault
        while self.next_check <= at:
            self._check(self.next_check)
            self.next_check += self.every
        if self.injection_at is not None and at >= self.injection_at and not story.injected:
            story.injected = True
            text = self.scenario.what_broke.split(". ")[0] + "."
            story.note(self.day, self.injection_at, "injection", text)
            if note := fault.on_inject(self.ctx, self.day):
                story.note(self.day, self.injection_at, "note", note)
        minutes = fault.response_minutes
        if story.detected_at is not None and minutes is not None and not story.fixed:
            fix_at = story.detected_at + pd.Timedelta(minutes=minutes)
            if at >= fix_at:
                story.fixed = True
                story.note(self.day, fix_at, "fix", fault.fix(self.ctx) or "the fix ships")

    def _check(self, at: pd.Timestamp) -> None:
        """The minute jobs over the last window of service time, as a live schedule
        would run them at `at`: every earlier payment has been answered by now."""
        started = time.perf_counter()
        try:
            self._run_minute_jobs(at)
        finally:
            self.seconds += time.perf_counter() - started

    def _note_trial(self, run: MonitorRun, at: pd.Timestamp) -> None:
        for finding in run.findings:
            version = finding["details"].get("challenger_version")
            if finding["job"] == "guardrail" and version and "canary" in finding["details"]:
                figures = {k: finding["metrics"].get(k) for k in TRIAL_FIGURES}
                self.story.result.trials[str(version)] = figures | {"at": at.isoformat()}

    def _run_minute_jobs(self, at: pd.Timestamp) -> None:
        since = max(at - self.window, self.ctx.day_start(self.day))
        if len(self.sent) > self.known_logged:  # answers since the last run: in the log yet?
            logged = bisect.bisect_left(self.sent, at) - bisect.bisect_left(self.sent, since)
            _wait_for_log(self.ctx, logged, since, at, timeout=10)
            self.known_logged = len(self.sent)
        with quiet_output():
            run = run_monitor(
                self.ctx.settings, Window(since, at), self.policy, minute_jobs_only=True
            )
        findings, decisions = monitor_figures(run)
        self.decisions += [
            d | {"at": at.isoformat(), "evidence": findings.get(d["job"], {}).get("summary", "")}
            for d in decisions
        ]
        self.runs += 1
        self._note_trial(run, at)
        story, detector = self.story, self.scenario.detector
        caught = [d for d in decisions if d["job"] == detector]
        if caught and story.injected:
            story.detect(self.day, at, caught[0]["rule"], detector or "")
        fixed = story.fixed or (story.fixed_day is not None and self.day >= story.fixed_day)
        quiet = findings.get(detector or "", {}).get("status") == "ok" and not caught
        if fixed and not story.recovered and quiet:
            story.recovered = True
            story.note(self.day, at, "recovery", f"the {detector} job finds nothing again")


def _replay_day(
    ctx: RunContext, api: ScoringAPI, day: int, amount_scale: float, between: _BetweenWaves
) -> ReplaySummary:
    payments = payments_of_days(ctx.transactions, ctx.spec.cutoff_day + day)
    if amount_scale != 1.0:
        for body in payments:
            body["amount"] = round(body["amount"] * amount_scale, 2)
    summary = replay_payments(
        api.url,
        payments,
        rate=0,
        concurrency=REPLAY_CONCURRENCY,
        clock=ctx.admin,
        # A customer's next payment waits for the answer to the previous one (and the
        # velocity state it updated), as a card's payments come minutes apart live.
        in_order_per="customer_id",
        waves_within=between.every,
        before_wave=between,
        clock_step=between.clock_step,
    )
    between.until(ctx.day_start(day + 1))  # the checks of the day's last minutes
    _wait_for_log(ctx, summary.answered, ctx.day_start(day), ctx.day_start(day + 1))
    return summary


def _wait_for_log(
    ctx: RunContext, answered: int, since: pd.Timestamp, until: pd.Timestamp, timeout: float = 30
) -> None:
    """The API writes its log in batches: wait until the window's answers are all in it."""
    deadline = time.monotonic() + timeout
    rows = 0
    while time.monotonic() < deadline:
        rows = count_between(ctx.settings.prediction_log_path, since, until)
        if rows >= answered:
            return
        time.sleep(0.002)
    raise RuntimeError(
        f"the prediction log holds {rows} of {answered} answers of [{since}, {until})"
    )


def _monitor_day(
    ctx: RunContext, policy: Policy, day: int, opens: pd.Timestamp, summary: ReplaySummary
) -> DayRecord:
    window = Window(opens, opens + pd.Timedelta(days=1))
    requests = read_predictions(ctx.settings.prediction_log_path, window.since, window.until)
    with quiet_output():
        # No Evidently HTML on the way (its plots are most of a run's time); the drift
        # figures are in each day's drift.json, and `fraudlab monitor run` over a day of
        # the run's world writes the HTML for it (report.md says how).
        run = run_monitor(ctx.settings, window, policy, html=False, transactions=ctx.transactions)
    findings, decisions = monitor_figures(run)
    last = requests.iloc[-1] if len(requests) else None  # the versions deciding at day's end
    return DayRecord(
        day=day,
        date=opens.isoformat(),
        requests=summary.requests,
        errors=summary.error_count,
        fallbacks=summary.fallbacks,
        p99_ms=summary.latency_ms["p99"],
        **traffic_figures(requests, ctx.transactions, ctx.settings.training.review_cost),
        champion_version="" if last is None else str(last["champion_version"]),
        challenger_version="" if last is None else str(last["challenger_version"] or ""),
        findings=findings,
        decisions=decisions,
    )


def collapsed(decisions: list[dict[str, Any]]) -> list[str]:
    """Decisions as `action` or `action (held)`, repeats counted: a breaker in force
    holds its rule back every few minutes all day."""
    names = [f"{d['action']}{'' if d['taken'] else ' (held)'}" for d in decisions]
    counts = Counter(names)
    return [name + (f" x{counts[name]}" if counts[name] > 1 else "") for name in counts]


def _day_line(record: DayRecord) -> str:
    def job(name: str, metric: str, fmt: str, label: str | None = None) -> str:
        status = record.status(name)
        value = record.metric(name, metric)
        shown = "-" if value != value else format(value, fmt)
        flag = "!" if status == "alert" else ""
        return f"{label or name} {shown}{flag}"

    actions = collapsed(record.decisions)
    marks = [e.kind for e in record.events if e.kind in ("injection", "fix", "deploy", "detection")]
    took = "+".join(f"{v:.1f}" for v in record.seconds.values())
    return (
        f"({took} s) day {record.day:>2} {record.date[:10]}: {record.requests:,} req, "
        f"{record.errors} err, {record.fallbacks} fallbacks, "
        f"flagged {record.review_rate:.1%}, fraud lost {record.fraud_losses:,.0f}, "
        f"cost {record.cost:,.0f} | "
        + " | ".join(
            [
                job("drift", "drift_share", ".0%"),
                job("skew", "max_mismatch_rate", ".0%"),
                job("performance", "recall", ".2f"),
                job("performance", "missed_fraud_ratio", ".1f", label="missed x"),
            ]
        )
        + (f" | policy: {', '.join(actions)}" if actions else "")
        + (f" [{', '.join(marks)}]" if marks else "")
    )
