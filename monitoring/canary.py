"""Canary analysis: the challenger against the champion on the same period, with a
statistical decision: promote, wait for more labels, or roll back.

Two comparisons of average precision (challenger minus champion), labels as known at
`now` (monitoring/performance.py):
- paired (shadow): on champion-routed payments the challenger's shadow score against
  the champion's logged score. Same payments, so the model is the only difference.
- arms (canary): the canary arm's payments against the champion arm's. Different
  customers, so the fraud mix differs too, and the canary arm is the small one.
The paired comparison decides whenever shadow scores exist; the arms decide otherwise.

Every threshold below is the policy's (`jobs.canary` in monitoring/policy.yaml).

The rule, in order:
1. Guardrails, which need no labels: roll back if the challenger arm's decline rate is
   more than `max_decline_ratio` times the champion arm's (once it has made at least
   `min_declines` declines), its model-stage p99 more than `max_latency_ratio` times the
   champion's (once it has answered `min_latency_rows` requests, and only above
   `latency_floor_ms`), its shadow error rate above `max_error_rate`, or its
   feature-fallback rate above the champion's by more than `max_error_rate`.
2. Evidence: fewer than `min_frauds` known frauds in the deciding comparison
   (paired: among its payments; arms: in the smaller arm) -> wait.
3. The 90% bootstrap interval of the AP difference: upper bound < 0 -> roll back
   (clearly worse); lower bound > -`ap_margin` -> promote (not worse by more than the
   margin: the challenger already beat the champion offline, the canary checks it holds
   up in production); otherwise wait, with the frauds needed estimated from the
   interval shrinking as 1/sqrt(frauds).
"""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pandas as pd

from monitoring.findings import Finding, Status
from monitoring.performance import average_precision, join_labels
from monitoring.policy import CanaryConfig
from pipelines.evaluate import GateComparison, bootstrap_ap_difference

OUTCOME_CODE = {"promote": 1.0, "wait": 0.0, "rollback": -1.0}
# The policy's rules turn a rollback into an alert; the job itself only waits or not.
OUTCOME_STATUS: dict[str, Status] = {"promote": "ok", "wait": "insufficient_data", "rollback": "ok"}


def bootstrap_arm_difference(
    challenger: pd.DataFrame, champion: pd.DataFrame, rounds: int, seed: int = 0
) -> GateComparison:
    """Unpaired bootstrap: each arm resampled on its own (different payments)."""
    rng = np.random.default_rng(seed)
    arms = [(a["label"].to_numpy(), a["score"].to_numpy()) for a in (challenger, champion)]
    deltas = []
    for _ in range(rounds):
        aps = []
        for y, s in arms:
            idx = rng.integers(0, len(y), len(y))
            aps.append(average_precision(pd.Series(y[idx]), pd.Series(s[idx])))
        if not any(math.isnan(ap) for ap in aps):
            deltas.append(aps[0] - aps[1])
    observed = average_precision(challenger["label"], challenger["score"]) - average_precision(
        champion["label"], champion["score"]
    )
    low, high = np.percentile(deltas, [5, 95]) if deltas else (np.nan, np.nan)
    return GateComparison(float(observed), float(low), float(high), len(deltas))


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
    Without canary traffic, decline and latency come from the shadow on the same payments.

    Latency is the model stage's (the part the challenger changes), not the whole
    request's: a request that waited behind others on a busy machine, or on the feature
    store, says nothing about the model, and on a few hundred requests such waits set
    the total's p99."""
    if len(canary):
        declines = float((canary["decision"] == "decline").sum())
        decline_ratio = _ratio(declines / len(canary), (champion["decision"] == "decline").mean())
        latency = (canary["model_ms"], champion["model_ms"])
        fallback_excess = float(canary["fallback"].mean() - champion["fallback"].mean())
    else:
        declines = float((paired["decision_shadow"] == "decline").sum())
        decline_ratio = _ratio(
            declines / max(len(paired), 1), (paired["decision"] == "decline").mean()
        )
        latency = (shadow["model_ms"].dropna(), champion["model_ms"])
        fallback_excess = 0.0
    p99 = [float(np.percentile(x, 99)) if len(x) else math.nan for x in latency]
    return {
        "challenger_declines": declines,
        "decline_ratio": float(decline_ratio),
        "latency_rows": float(len(latency[0])),
        "challenger_p99_ms": p99[0],
        "latency_ratio": _ratio(*p99) if len(latency[0]) and len(latency[1]) else math.nan,
        "shadow_error_rate": float(shadow["error"].notna().mean()) if len(shadow) else 0.0,
        "fallback_excess": fallback_excess,
    }


def breaches(g: dict[str, float], config: CanaryConfig) -> list[str]:
    found = []
    max_decline, max_latency, max_error = (
        config.max_decline_ratio,
        config.max_latency_ratio,
        config.max_error_rate,
    )
    if g["decline_ratio"] > max_decline and g["challenger_declines"] >= config.min_declines:
        found.append(f"decline rate {g['decline_ratio']:.2f}x the champion's (max {max_decline})")
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


def frauds_to_decide(cmp: GateComparison, frauds: int, margin: float) -> int:
    """Extra known frauds until the interval clears the nearer boundary, if the observed
    difference holds and the interval shrinks as 1/sqrt(frauds)."""
    if cmp.delta_ap > -margin:  # heading for promote: lower bound must pass -margin
        half, room = cmp.delta_ap - cmp.ci_low, cmp.delta_ap + margin
    else:  # heading for rollback: upper bound must drop below 0
        half, room = cmp.ci_high - cmp.delta_ap, -cmp.delta_ap
    return max(1, math.ceil(frauds * (half / room) ** 2) - frauds)


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
    return "paired", frauds, bootstrap_ap_difference(y, candidate, incumbent, rounds, seed), arms


def decide(
    breached: list[str],
    cmp: GateComparison | None,
    basis: str,
    frauds: int,
    min_frauds: int,
    margin: float,
) -> tuple[str, str, int]:
    """(outcome, reason, frauds still needed): the rule of the module docstring."""
    if breached:
        return "rollback", "guardrail breached: " + "; ".join(breached), 0
    if cmp is None:
        needed = max(0, min_frauds - frauds)
        return (
            "wait",
            f"{frauds} known frauds in the {basis} comparison, {needed} more needed",
            needed,
        )
    if cmp.ci_high < 0:
        return "rollback", "challenger clearly worse: the AP interval is below 0", 0
    if cmp.ci_low > -margin:
        return "promote", f"AP interval above -{margin} and guardrails pass", 0
    needed = frauds_to_decide(cmp, frauds, margin)
    return "wait", f"AP interval inconclusive; about {needed} more known frauds needed", needed


def run_canary(
    predictions: pd.DataFrame,
    shadow_scores: pd.DataFrame,
    transactions: pd.DataFrame,
    now: pd.Timestamp,
    config: CanaryConfig,
    *,
    seed: int = 0,
) -> Finding:
    """Decide promote / wait / rollback for the challenger; see the module docstring."""
    labelled = join_labels(predictions, transactions, now)
    champion = labelled[labelled["route"] == "champion"]
    canary = labelled[labelled["route"] == "canary"]
    paired = paired_rows(labelled, shadow_scores)
    g = guardrails(champion, canary, paired, shadow_scores)
    breached = breaches(g, config)
    basis, frauds, cmp, arms_cmp = compare(
        champion, canary, paired, config.min_frauds, config.bootstrap_rounds, seed
    )
    outcome, reason, needed = decide(
        breached, cmp, basis, frauds, config.min_frauds, config.ap_margin
    )
    nan = math.nan
    metrics = {
        "delta_ap": cmp.delta_ap if cmp else nan,
        "ci_low": cmp.ci_low if cmp else nan,
        "ci_high": cmp.ci_high if cmp else nan,
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
        "arm_comparison": asdict(arms_cmp) if arms_cmp else None,
        "rule": __doc__.split("The rule, in order:")[1].strip() if __doc__ else "",
    }
    return Finding(
        job="canary",
        status=OUTCOME_STATUS[outcome],
        summary=_summary(outcome, reason, cmp, basis, frauds, g),
        metrics=metrics,
        details=details,
    )


def _summary(
    outcome: str,
    reason: str,
    cmp: GateComparison | None,
    basis: str,
    frauds: int,
    g: dict[str, float],
) -> str:
    evidence = (
        f"challenger minus champion AP {cmp.delta_ap:+.3f} (90% CI {cmp.ci_low:+.3f} to "
        f"{cmp.ci_high:+.3f}, {basis}, {frauds} known frauds)"
        if cmp
        else f"no AP comparison yet ({basis}, {frauds} known frauds)"
    )
    return (
        f"{outcome}: {reason}. {evidence}; decline ratio {g['decline_ratio']:.2f}, "
        f"model p99 ratio {g['latency_ratio']:.2f}, shadow errors {g['shadow_error_rate']:.1%}."
    )
