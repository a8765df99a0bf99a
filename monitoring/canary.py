"""Canary analysis: the challenger against the champion on the same period, with a
statistical decision: promote, wait for more labels, or roll back.

Two comparisons of average precision (challenger minus champion), labels as known at
`now` (monitoring/performance.py):
- paired (shadow): on champion-routed payments the challenger's shadow score against
  the champion's logged score. Same payments, so the model is the only difference.
- arms (canary): the canary arm's payments against the champion arm's. Different
  customers, so the fraud mix differs too, and the canary arm is the small one.
The paired comparison decides whenever shadow scores exist; the arms decide otherwise.
Both bootstraps resample days and cards, not payments (pipelines/evaluate.py Clusters):
a card's frauds come together, and counting them as independent narrows the interval.

Every threshold below is the policy's (`jobs.canary` in monitoring/policy.yaml).

The rule, in order:
1. Guardrails, which need no labels: roll back if the challenger declined more of its
   customers than `max_decline_ratio` times the champion's share allows (at least
   `min_declines` customers, and a count that chance under that share explains with
   probability below `decline_alpha`; customers, so one card-testing burst is one),
   its model-stage p99 more than `max_latency_ratio` times the champion's (on canary
   traffic, once it has answered `min_latency_rows` requests, and
   only above `latency_floor_ms`), its shadow error rate above `max_error_rate`, or its
   feature-fallback rate above the champion's by more than `max_error_rate`.
2. Evidence: fewer than `min_frauds` known frauds in the deciding comparison
   (paired: among its payments; arms: in the smaller arm) -> wait.
3. A sequential test, valid however many days it looks: each look may spend only the
   error that its growth in evidence buys (Lan-DeMets O'Brien-Fleming spending of
   `alpha` per boundary over information t = known frauds / `plan_frauds`; a look
   spends alpha(t) - alpha(t at the look `look_every_hours` earlier), and the union
   bound keeps the total within `alpha`). The AP difference's interval at that level
   (bootstrap standard error): upper bound < 0 -> roll back (clearly worse); lower
   bound > -`ap_margin` -> promote (not worse by more than the margin: the challenger
   already beat the champion offline, the canary checks it holds up in production);
   at the planned evidence and still neither -> roll back (the champion stays);
   otherwise wait. A fresh 90% interval every day would, over a month of looks, cross
   a boundary by chance far more often than one time in ten.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm
from sklearn.metrics import average_precision_score

from monitoring.findings import Finding, Status
from monitoring.guardrail import upper_tail
from monitoring.performance import average_precision, join_labels
from monitoring.policy import CanaryConfig
from pipelines.evaluate import Clusters, GateComparison, bootstrap_ap_difference

OUTCOME_CODE = {"promote": 1.0, "wait": 0.0, "rollback": -1.0}
# The policy's rules turn a rollback into an alert; the job itself only waits or not.
OUTCOME_STATUS: dict[str, Status] = {"promote": "ok", "wait": "insufficient_data", "rollback": "ok"}


def bootstrap_arm_difference(
    challenger: pd.DataFrame, champion: pd.DataFrame, rounds: int, seed: int = 0
) -> GateComparison:
    """Unpaired bootstrap: each arm resampled on its own (different payments), by days
    and cards."""
    rng = np.random.default_rng(seed)
    arms = [
        (a["label"].to_numpy(), a["score"].to_numpy(), Clusters.of(a))
        for a in (challenger, champion)
    ]
    deltas = []
    for _ in range(rounds):
        aps = []
        for y, s, clusters in arms:
            w = clusters.weights(rng)
            drawn = w > 0
            known = float((w * y).sum())
            aps.append(
                average_precision_score(y[drawn], s[drawn], sample_weight=w[drawn])
                if 0 < known < w.sum()
                else math.nan
            )
        if not any(math.isnan(ap) for ap in aps):
            deltas.append(aps[0] - aps[1])
    observed = average_precision(challenger["label"], challenger["score"]) - average_precision(
        champion["label"], champion["score"]
    )
    low, high = np.percentile(deltas, [5, 95]) if deltas else (np.nan, np.nan)
    se = float(np.std(deltas)) if deltas else math.nan
    return GateComparison(float(observed), float(low), float(high), len(deltas), se, "days x cards")


def paired_rows(labelled: pd.DataFrame, shadow_scores: pd.DataFrame) -> pd.DataFrame:
    """Champion-routed payments with the challenger's shadow score: errors dropped, and
    only the shadow of the version that was challenger when the payment was served."""
    scored = shadow_scores.dropna(subset=["score"])
    scored = scored[["request_id", "model_version", "score", "decision"]]
    champion = labelled[labelled["route"] == "champion"]
    paired = champion.merge(scored, on="request_id", suffixes=("", "_shadow"))
    same = paired["model_version_shadow"] == paired["challenger_version"]
    return paired[same].reset_index(drop=True)


def _ratio(challenger: float, champion: float) -> float:
    if champion > 0:
        return challenger / champion
    return 1.0 if challenger == 0 else math.inf


def guardrails(
    champion: pd.DataFrame, canary: pd.DataFrame, paired: pd.DataFrame, shadow: pd.DataFrame
) -> dict[str, float]:
    """Decline, latency and error figures of the challenger relative to the champion.
    Without canary traffic, declines come from the shadow on the same payments, and
    latency is not judged: a shadow call runs in a thread that yields to every request
    being scored (serving/shadow.py), so its time is not the request path's (a loaded
    machine once made a shadow's model p99 4x the champion's).

    Latency is the model stage's (the part the challenger changes), not the whole
    request's: a request that waited behind others on a busy machine, or on the feature
    store, says nothing about the model, and on a few hundred requests such waits set
    the total's p99."""
    if len(canary):
        declined, customers = declined_customers(canary, "decision")
        baseline = declined_customers(champion, "decision")
        latency = (canary["model_ms"], champion["model_ms"])
        fallback_excess = float(canary["fallback"].mean() - champion["fallback"].mean())
    else:
        declined, customers = declined_customers(paired, "decision_shadow")
        baseline = declined_customers(paired, "decision")
        latency = (pd.Series(dtype="float64"), champion["model_ms"])
        fallback_excess = 0.0
    p99 = [float(np.percentile(x, 99)) if len(x) else math.nan for x in latency]
    # A champion that declined nobody is not a model that never declines: one customer
    # stands in for it, so one card-testing card cannot read as infinite.
    champion_share = max(baseline[0], 1) / max(baseline[1], 1)
    return {
        "challenger_declines": float(declined),
        "challenger_customers": float(customers),
        "champion_decline_share": champion_share,
        "decline_ratio": float(_ratio(declined / max(customers, 1), champion_share)),
        "latency_rows": float(len(latency[0])),
        "challenger_p99_ms": p99[0],
        "latency_ratio": _ratio(*p99) if len(latency[0]) and len(latency[1]) else math.nan,
        "shadow_error_rate": float(shadow["error"].notna().mean()) if len(shadow) else 0.0,
        "fallback_excess": fallback_excess,
    }


def declined_customers(rows: pd.DataFrame, column: str) -> tuple[int, int]:
    """(customers with a declined payment, customers): a card-testing burst is one card."""
    declined = rows.loc[rows[column] == "decline", "customer_id"].nunique()
    return int(declined), int(rows["customer_id"].nunique())


def declines_too_many(g: dict[str, float], config: CanaryConfig) -> bool:
    """Did the challenger decline more customers than `max_decline_ratio` times the
    champion's share allows, by a count that chance explains less than one time in
    1 / `decline_alpha`, and at least `min_declines` of them?"""
    if g["challenger_declines"] < config.min_declines:
        return False
    allowed = min(1.0, config.max_decline_ratio * g["champion_decline_share"])
    declined, customers = int(g["challenger_declines"]), int(g["challenger_customers"])
    return upper_tail(declined, customers, allowed) < config.decline_alpha


def breaches(g: dict[str, float], config: CanaryConfig) -> list[str]:
    found = []
    max_decline, max_latency, max_error = (
        config.max_decline_ratio,
        config.max_latency_ratio,
        config.max_error_rate,
    )
    if declines_too_many(g, config):
        found.append(
            f"declined {g['challenger_declines']:.0f} of {g['challenger_customers']:.0f} "
            f"customers, {g['decline_ratio']:.2f}x the champion's share (max {max_decline})"
        )
    slow = g["latency_ratio"] > max_latency and g["challenger_p99_ms"] > config.latency_floor_ms
    if slow and g["latency_rows"] >= config.min_latency_rows:
        found.append(
            f"model latency p99 {g['challenger_p99_ms']:.1f} ms, {g['latency_ratio']:.2f}x the "
            f"champion's (max {max_latency}x above {config.latency_floor_ms:g} ms)"
        )
    if g["shadow_error_rate"] > max_error:
        found.append(f"shadow error rate {g['shadow_error_rate']:.1%} (max {max_error:.1%})")
    if g["fallback_excess"] > max_error:
        found.append(f"feature fallbacks {g['fallback_excess']:.1%} above the champion's")
    return found


def compare(
    champion: pd.DataFrame,
    canary: pd.DataFrame,
    paired: pd.DataFrame,
    min_frauds: int,
    rounds: int,
    seed: int,
) -> tuple[str, int, GateComparison | None, GateComparison | None]:
    """(basis, its known frauds, the deciding comparison or None while there are too
    few frauds, the arms comparison, reported whenever both arms have a known fraud)."""
    arm_frauds = min(int(champion["label"].sum()), int(canary["label"].sum()))
    arms = bootstrap_arm_difference(canary, champion, rounds, seed) if arm_frauds else None
    if not len(paired):
        return "arms", arm_frauds, (arms if arm_frauds >= min_frauds else None), arms
    frauds = int(paired["label"].sum())
    if frauds < min_frauds:
        return "paired", frauds, None, arms
    y, candidate, incumbent = (paired[c].to_numpy() for c in ("label", "score_shadow", "score"))
    cmp = bootstrap_ap_difference(
        y, candidate, incumbent, rounds, seed, clusters=Clusters.of(paired)
    )
    return "paired", frauds, cmp, arms


def spent(t: float, alpha: float) -> float:
    """O'Brien-Fleming-type alpha spending (Lan-DeMets): the error allowed by
    information t in [0, 1]; almost nothing early, all of `alpha` at t = 1."""
    if t <= 0:
        return 0.0
    return float(2 * (1 - norm.cdf(norm.ppf(1 - alpha / 2) / math.sqrt(min(t, 1.0)))))


@dataclass(frozen=True)
class Look:
    information: float  # known frauds / plan_frauds, capped at 1
    alpha: float  # the error this look may spend, per boundary
    z: float  # the interval's half-width in standard errors at that level


def look_of(frauds: int, frauds_before: int, config: CanaryConfig) -> Look:
    """This look's share of the error budget: what spending allows at its evidence,
    less what the previous look (with `frauds_before`) already allowed."""
    t = min(1.0, frauds / config.plan_frauds)
    before = frauds_before / config.plan_frauds if frauds_before >= config.min_frauds else 0.0
    alpha = max(0.0, spent(t, config.alpha) - spent(before, config.alpha))
    return Look(t, alpha, float(norm.isf(alpha)) if alpha > 0 else math.inf)


def decide(
    breached: list[str],
    cmp: GateComparison | None,
    look: Look,
    basis: str,
    frauds: int,
    config: CanaryConfig,
) -> tuple[str, str, int]:
    """(outcome, reason, frauds still needed): the rule of the module docstring."""
    if breached:
        return "rollback", "guardrail breached: " + "; ".join(breached), 0
    if cmp is None:
        needed = max(0, config.min_frauds - frauds)
        return (
            "wait",
            f"{frauds} known frauds in the {basis} comparison, {needed} more needed",
            needed,
        )
    low, high = interval(cmp, look)
    if high < 0:
        return "rollback", f"challenger clearly worse: the AP interval ({look_text(look)}) < 0", 0
    if low > -config.ap_margin:
        return "promote", f"AP interval ({look_text(look)}) above -{config.ap_margin}", 0
    if look.information >= 1:
        return "rollback", "inconclusive at the planned evidence: the champion stays", 0
    needed = max(1, math.ceil(config.plan_frauds * (1 - look.information)))
    next_look = f"next look in {config.look_every_hours:g} h"
    return "wait", f"AP interval ({look_text(look)}) inconclusive; {next_look}", needed


def interval(cmp: GateComparison, look: Look) -> tuple[float, float]:
    half = look.z * cmp.se
    return cmp.delta_ap - half, cmp.delta_ap + half


def look_text(look: Look) -> str:
    return f"level {1 - look.alpha:.4f} at {look.information:.0%} of the planned evidence"


def run_canary(
    predictions: pd.DataFrame,
    shadow_scores: pd.DataFrame,
    transactions: pd.DataFrame,
    now: pd.Timestamp,
    config: CanaryConfig,
    label_events: pd.DataFrame | None = None,
    *,
    seed: int = 0,
) -> Finding:
    """Decide promote / wait / rollback for the challenger; see the module docstring.
    `label_events`: the label feed of served traffic, when there is one."""
    labelled = join_labels(predictions, transactions, now, label_events)
    champion = labelled[labelled["route"] == "champion"]
    canary = labelled[labelled["route"] == "canary"]
    paired = paired_rows(labelled, shadow_scores)
    g = guardrails(champion, canary, paired, shadow_scores)
    breached = breaches(g, config)
    basis, frauds, cmp, arms_cmp = compare(
        champion, canary, paired, config.min_frauds, config.bootstrap_rounds, seed
    )
    earlier = frauds_known_before(
        predictions, shadow_scores, transactions, now, config, label_events
    )
    look = look_of(frauds, earlier, config)
    outcome, reason, needed = decide(breached, cmp, look, basis, frauds, config)
    low, high = interval(cmp, look) if cmp else (math.nan, math.nan)
    nan = math.nan
    metrics = {
        "delta_ap": cmp.delta_ap if cmp else nan,
        "ci_low": low,
        "ci_high": high,
        "frauds_needed": float(needed),
        "known_frauds": float(frauds),
        "decline_ratio": g["decline_ratio"],
        "latency_ratio": g["latency_ratio"],
        "shadow_error_rate": g["shadow_error_rate"],
        "fallback_excess": g["fallback_excess"],
        "outcome_code": OUTCOME_CODE[outcome],
    }
    details = {
        "outcome": outcome,
        "reason": reason,
        "basis": basis,
        "now": now.isoformat(),
        "breaches": breached,
        "guardrails": g,
        "arm_frauds": {
            "champion": int(champion["label"].sum()),
            "canary": int(canary["label"].sum()),
        },
        "rows": {"champion": len(champion), "canary": len(canary), "paired": len(paired)},
        "comparison": asdict(cmp) if cmp else None,
        "look": asdict(look),
        "arm_comparison": asdict(arms_cmp) if arms_cmp else None,
        "rule": __doc__.split("The rule, in order:")[1].strip() if __doc__ else "",
    }
    return Finding(
        job="canary",
        status=OUTCOME_STATUS[outcome],
        summary=_summary(outcome, reason, cmp, (low, high), basis, frauds, g),
        metrics=metrics,
        details=details,
    )


def frauds_known_before(
    predictions: pd.DataFrame,
    shadow_scores: pd.DataFrame,
    transactions: pd.DataFrame,
    now: pd.Timestamp,
    config: CanaryConfig,
    label_events: pd.DataFrame | None = None,
) -> int:
    """Known frauds in the deciding comparison at the previous look, `look_every_hours`
    ago (what that look could already spend; recomputed, so the job keeps no state)."""
    before = now - pd.Timedelta(hours=config.look_every_hours)
    earlier = predictions[predictions["event_timestamp"] < before]
    labelled = join_labels(earlier, transactions, before, label_events)
    paired = paired_rows(labelled, shadow_scores)
    if len(paired):
        return int(paired["label"].sum())
    arms = [labelled[labelled["route"] == r]["label"].sum() for r in ("champion", "canary")]
    return int(min(arms))


def _summary(
    outcome: str,
    reason: str,
    cmp: GateComparison | None,
    bounds: tuple[float, float],
    basis: str,
    frauds: int,
    g: dict[str, float],
) -> str:
    evidence = (
        f"challenger minus champion AP {cmp.delta_ap:+.3f} (interval {bounds[0]:+.3f} to "
        f"{bounds[1]:+.3f}, {basis}, {frauds} known frauds)"
        if cmp
        else f"no AP comparison yet ({basis}, {frauds} known frauds)"
    )
    return (
        f"{outcome}: {reason}. {evidence}; decline ratio {g['decline_ratio']:.2f}, "
        f"model p99 ratio {g['latency_ratio']:.2f}, shadow errors {g['shadow_error_rate']:.1%}."
    )
