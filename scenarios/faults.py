"""What each scenario breaks, and how. A fault is active from its injection day until it
is fixed (by the on-call engineer after an alert, or never: the system must cope).

Each fault breaks a real part the way it breaks in production: the caller's payload
(amounts in cents), the batch job that fills the online store (stopped, or computing
a window its own way), the serving code (a `fillna(0)` deploy), the world (a new attack),
or the training code (a leaky join). Nothing is simulated inside the monitor: it has to
find the fault from the prediction log, the feature store and the labels, as it would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipelines.registry import CHALLENGER, connect, set_alias
from pipelines.train import run_training
from pipelines.training_set import NAIVE_SERVICE

if TYPE_CHECKING:
    from scenarios.engine import RunContext


@dataclass(frozen=True)
class Fault:
    """No fault: healthy traffic (the baseline)."""

    operator_fix: bool = False  # an on-call engineer reverts it the morning after an alert
    # Minutes from the alert to the operator's fix, for a story whose monitor looks every
    # few minutes (the minute jobs); None: the fix ships the morning after.
    response_minutes: float | None = None
    injects_at_hour: float = 0.0  # hour of the injection day the fault starts at
    stream: bool = False  # payments reach the velocity state through the Redis stream

    def world_options(self, inject_day: int | None) -> dict[str, Any]:
        """What the world must hold for this story (scenarios/world.py WorldSpec)."""
        return {}

    def fix(self, ctx: RunContext) -> str:
        """The operator's fix, when it is an act and not a revert of `active`; a note."""
        return ""

    def serving_env(self, active: bool) -> dict[str, str]:
        """Settings the scoring API runs with (a change restarts it: a deploy)."""
        return {}

    def amount_scale(self, active: bool) -> float:
        """What the caller multiplies each amount by before sending it."""
        return 1.0

    def feed_online_store(self, ctx: RunContext, day: int, active: bool) -> str:
        """The daily batch job: the midnight snapshot goes to the online store."""
        ctx.materialize(day)
        return ""

    def on_inject(self, ctx: RunContext, day: int) -> str:
        """A one-off action at the injection (e.g. a model goes out); returns a note."""
        return ""


@dataclass(frozen=True)
class Exploration(Fault):
    """Nothing breaks: from the injection day the API approves `share` of the payments
    the model would review or decline, at random, and logs each answer's propensity
    (serving/exploration.py). What it buys is a labelled sample of the model's declines;
    what it costs is the frauds it lets through."""

    share: float = 0.2

    def serving_env(self, active: bool) -> dict[str, str]:
        return {"FRAUDLAB_SERVING__EXPLORATION_SHARE": str(self.share)} if active else {}


@dataclass(frozen=True)
class AmountInCents(Fault):
    """The payment gateway starts sending amounts in cents; the model was trained on units."""

    operator_fix: bool = True

    def amount_scale(self, active: bool) -> float:
        return 100.0 if active else 1.0


@dataclass(frozen=True)
class StaleFeatures(Fault):
    """The materialization job stops; the online store keeps serving its last snapshot."""

    operator_fix: bool = True

    def feed_online_store(self, ctx: RunContext, day: int, active: bool) -> str:
        if active:
            return "materialization job did not run"
        return super().feed_online_store(ctx, day, active)


@dataclass(frozen=True)
class MissingAsZero(Fault):
    """A serving deploy fills missing features with 0; training left them missing (NaN)."""

    operator_fix: bool = True

    def serving_env(self, active: bool) -> dict[str, str]:
        return {"FRAUDLAB_SERVING__FILL_MISSING_WITH": "0"} if active else {}


@dataclass(frozen=True)
class WindowMismatch(Fault):
    """The online pipeline computes `customer_mean_amount_7d` over the last 3 days; the
    offline feature table (what training used) over 7."""

    feature: str = "customer_mean_amount_7d"
    online_days: int = 3
    operator_fix: bool = True

    def feed_online_store(self, ctx: RunContext, day: int, active: bool) -> str:
        ctx.materialize(day)
        if not active:
            return ""
        snapshot = ctx.offline_snapshot("customer_spending", day)
        recent = recent_mean_amount(
            ctx.transactions, snapshot["event_timestamp"].iloc[0], self.online_days
        )
        snapshot[self.feature] = snapshot["customer_id"].map(recent).astype("float64")
        ctx.write_online("customer_spending", snapshot)
        return f"online job wrote {self.feature} over {self.online_days} days"


def recent_mean_amount(tx: pd.DataFrame, until: pd.Timestamp, days: int) -> pd.Series:
    """Mean amount per customer over the payments of [until - days, until)."""
    since = until - pd.Timedelta(days=days)
    window = tx[(tx["event_timestamp"] >= since) & (tx["event_timestamp"] < until)]
    return window.groupby("customer_id")["amount"].mean()


@dataclass(frozen=True)
class NewFraudPattern(Fault):
    """Card testing starts: bursts of tiny payments on stolen cards, never seen in training.
    The attack is in the simulated world itself (WorldSpec.new_pattern_day); nobody fixes
    it, the system has to learn it."""

    daily_share: float = 1e-2  # cards tested per customer and day: ~6 bursts a day

    def world_options(self, inject_day: int | None) -> dict[str, Any]:
        return {"new_pattern_day": inject_day, "new_pattern_daily_share": self.daily_share}


@dataclass(frozen=True)
class KnownCardTesting(Fault):
    """Card testing has gone on for weeks before the champion's cutoff, so its training
    labels hold it; nobody breaks anything. The champion (fraud_v3, velocity features
    included) decides, and a model on `compare_with` (fraud_v2: daily snapshots only) is
    shadow-scored beside it on the same payments."""

    started_days_before_cutoff: int = 40
    daily_share: float = 1e-2  # as in the drift story: ~6 bursts a day
    compare_with: str = "fraud_v2"

    def world_options(self, inject_day: int | None) -> dict[str, Any]:
        return {
            "new_pattern_day": -self.started_days_before_cutoff,
            "new_pattern_daily_share": self.daily_share,
            "shadow_service": self.compare_with,
        }


@dataclass(frozen=True)
class StreamWorkerStops(KnownCardTesting):
    """The stream worker that applies scored payments to the velocity state is killed
    (SIGKILL) at `injects_at_hour`: the API keeps answering and publishing, nothing
    errors, and every velocity feature freezes at the last applied payment. The on-call
    engineer restarts it `response_minutes` after the freshness alert; the worker then
    re-reads what it held and applies the backlog (delivery is at least once)."""

    stream: bool = True
    # Half past eight: timed so that the day's first card-testing burst (08:42 in the
    # small world, seed 11) comes while the features are frozen, to show what they miss.
    injects_at_hour: float = 8.5
    response_minutes: float | None = 30.0

    def on_inject(self, ctx: RunContext, day: int) -> str:
        assert ctx.worker is not None
        ctx.worker.kill()
        return "stream worker killed (SIGKILL); the API keeps publishing to the stream"

    def fix(self, ctx: RunContext) -> str:
        assert ctx.worker is not None
        ctx.worker.start()
        return "the on-call engineer restarts the stream worker; it applies the backlog"


@dataclass(frozen=True)
class LeakyChallenger(Fault):
    """A model trained with the naive join (labels from the future). The gate refuses
    it for its leak signature; then someone overrides the gate, moves the `challenger`
    alias by hand and gives it a canary share: the canary path, exercised on purpose."""

    canary_share: float = 0.3

    def on_inject(self, ctx: RunContext, day: int) -> str:
        (outcome,) = run_training(
            ctx.settings,
            ["lightgbm"],
            NAIVE_SERVICE,  # the views the naive join rebuilds, with the leak in terminal_risk
            join="naive",
            cutoff_day=ctx.spec.cutoff_day + day,
        )
        offline = outcome.metrics["average_precision"]
        honest = (outcome.point_in_time_metrics or {}).get("average_precision", np.nan)
        trained = (
            f"leaky v{outcome.version}: offline AP {offline:.3f}, {honest:.3f} on "
            f"point-in-time features"
        )
        if outcome.alias == "challenger":
            return f"{trained}; the gate let it through (leak check off?)"
        refused = next((n for n in outcome.notes if "leak signature" in n), "refused")
        client = connect(ctx.settings)
        set_alias(client, ctx.settings.training.model_name, CHALLENGER, outcome.version)
        told = f"{ctx.admin.reload()}; {ctx.admin.set_canary(self.canary_share)}"
        return (
            f"{trained}. {refused}. Overridden by hand: alias challenger -> "
            f"v{outcome.version}, a {self.canary_share:.0%} canary; {told}"
        )
