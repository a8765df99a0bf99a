"""The fast guardrails: what the last few minutes of answers say, before any label.

Labels come days to weeks late; a unit change at the gateway or a broken model does
its harm in minutes. So every few minutes of service time (policy: `minute_jobs`) this
job holds the window's answers to what the serving versions' own references expect
(monitoring/expectations.py), each check a binomial tail test: a count of customers
this unlikely (`alpha`) under the expected share, and an effect big enough to matter.

- inputs: per feature of the champion, customers whose latest value lies outside the
  reference's [q, 1 - q] band, or whose missing share moved far from the reference's:
  a unit change fails on the first customers, a `fillna(0)` deploy as soon as the
  features that are usually missing stop being missing;
- decisions: customers the champion flagged (review or decline) and declined, by its
  own decision (not the breaker's), against the shares its reference implies;
- fallbacks and the champion's score distribution (PSI, once the window has enough);
- the challenger, over its trial so far (canary answers and shadow scores): its flag
  and decline shares against its own reference's, both ways, its score PSI against its
  own reference, how well its scores rank the payments the champion flagged above
  the rest on the same payments (the AUC of its score for the champion's decision: a
  model fit to the same task ranks alike, whatever its thresholds; one trained on a
  leak ranks at random), and its shadow errors. A challenger that fails any of these
  is rolled back before a single label has matured; promotion stays with the
  label-based canary job.

Customers, not payments, are counted: a card-testing burst is one card, and a check
that one customer's ten payments could trip would trip on every burst.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binom
from sklearn.metrics import roc_auc_score

from features.definitions import is_count
from monitoring.expectations import Expectations, bin_shares, psi
from monitoring.findings import Finding
from monitoring.policy import GuardrailConfig

FLAGGED = ("review", "decline")


def upper_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return float(binom.sf(k - 1, n, min(max(p, 1e-12), 1.0)))


def lower_tail(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    return float(binom.cdf(k, n, min(max(p, 1e-12), 1.0)))


def latest_per(rows: pd.DataFrame, entity: str) -> pd.DataFrame:
    """Each entity's latest row (`rows` in time order), in the order of those rows.
    (numpy's unique rather than drop_duplicates: a few times cheaper on the dozens of
    rows the minute jobs hold.)"""
    values = rows[entity].to_numpy()
    _, first_from_end = np.unique(values[::-1], return_index=True)
    return rows.iloc[np.sort(len(values) - 1 - first_from_end)]


def input_failures(
    rows: pd.DataFrame, expected: Expectations, config: GuardrailConfig
) -> list[dict[str, Any]]:
    """Features whose band or missing share the window's entities break. The effect is
    checked first, for all features at once; only a feature past it gets the test.

    Both checks look for what a pipeline fault does, not for the world moving (the
    daily drift job's business): a value far outside the reference's band (beyond it
    by `range_margin` of its width: a unit change, not a customer whose mean amount is
    just under the reference's least), and a missing share collapsed to none or all of
    the entities (a fill default, a view no longer served), not one that drifted.

    A terminal's features are counted per terminal, the rest per customer: three
    customers at one terminal are one terminal, not three customers. And a count is
    held to the lower side of its band only (`_band_failures`): the drift story on
    seed 13 tripped the breaker at night on three terminals whose known-fraud counts
    the attack had pushed past every terminal of the reference."""
    names = [name for name in expected.features if name in rows]
    by_terminal = [n for n in names if n.startswith("terminal_") and "terminal_id" in rows]
    by_customer = [n for n in names if n not in by_terminal]
    ordered = rows.sort_values("event_timestamp")
    failed = _band_failures(latest_per(ordered, "customer_id"), by_customer, expected, config)
    if by_terminal:
        latest = latest_per(ordered, "terminal_id")
        failed += _band_failures(latest, by_terminal, expected, config)
    return sorted(failed, key=lambda f: names.index(f["feature"]))


def _band_failures(
    latest: pd.DataFrame, names: list[str], expected: Expectations, config: GuardrailConfig
) -> list[dict[str, Any]]:
    """input_failures over one row per entity."""
    n = len(latest)
    if not names or n == 0:
        return []
    values = latest[names].to_numpy(np.float64)
    bands = [expected.bands[name] for name in names]
    low, high = np.array([b.low for b in bands]), np.array([b.high for b in bands])
    margin = config.range_margin * (high - low)
    # A count grows with the history it counts (an attack piles known frauds on its
    # terminals, a busy day piles payments) past any reference value; no unit change
    # touches a count, and one that drops below its band (a view serving zeros) is
    # still a fault. So a count is held to the lower side of its band only.
    counts = np.array([is_count(name) for name in names])
    above = (values > high + margin) & ~counts
    outside = ((values < low - margin) | above).sum(axis=0)
    missing = np.isnan(values).sum(axis=0)
    reference_missing = np.array([b.missing for b in bands])
    failed = []
    for i in np.flatnonzero(outside >= config.min_out_of_band_share * n):
        p = upper_tail(int(outside[i]), n, expected.out_of_band_share)
        if p < config.alpha:
            failed.append(_failure(names[i], "outside its band", int(outside[i]), n, p, bands[i]))
    change = missing / n - reference_missing
    all_or_none = (missing == 0) | (missing == n)
    for i in np.flatnonzero((np.abs(change) >= config.min_missing_change) & all_or_none):
        tail = upper_tail if change[i] > 0 else lower_tail
        p = tail(int(missing[i]), n, bands[i].missing)
        if p < config.alpha:
            k = int(missing[i])
            failed.append(_failure(names[i], "missing share moved", k, n, p, bands[i]))
    return failed


def _failure(name: str, what: str, k: int, n: int, p: float, band: Any) -> dict[str, Any]:
    return {
        "feature": name,
        "check": what,
        "entities": k,  # customers, or terminals for a terminal's feature
        "of": n,
        "share": round(k / n, 4),
        "p_value": p,
        "band": [band.low, band.high],
        "reference_missing": round(band.missing, 4),
    }


def decision_breaches(
    decisions: pd.DataFrame, expected: Expectations, config: GuardrailConfig, both_ways: bool
) -> list[dict[str, Any]]:
    """Flag and decline shares (`decisions`: customer_id, decision, the model's own)
    against the version's band. Above it: at least `decision_min_share` of the
    customers (a unit change flags almost everyone; a compromised terminal's customers
    are a cluster, rightly declined, and a card's burst is one customer). With
    `both_ways`, below it too, counting payments: a model that stops flagging is broken
    as well (a fraction `below_factor` of its reference's share), and only many
    payments can show a share that small."""
    decided = decisions["decision"].to_numpy()
    marked = {
        "flagged": decisions["decision"].isin(FLAGGED).to_numpy(),
        "declined": decided == "decline",
    }
    customer, _ = pd.factorize(decisions["customer_id"])  # per customer, as numpy does it
    n = int(customer.max()) + 1 if len(customer) else 0
    breaches = []
    for what, expected_share in (
        ("flagged", expected.flag_share),
        ("declined", expected.decline_share),
    ):
        k = int((np.bincount(customer, weights=marked[what], minlength=n) > 0).sum())
        share = k / n if n else 0.0
        if share >= config.decision_min_share:
            p = upper_tail(k, n, expected_share)
            if p < config.alpha:
                breaches.append(_breach(what, "above", k, n, share, expected_share, p))
        payments, flagged = len(decided), int(marked[what].sum())
        low = flagged / payments if payments else 1.0
        if both_ways and low <= expected_share / config.below_factor:
            p = lower_tail(flagged, payments, expected_share)
            if p < config.alpha:
                breaches.append(_breach(what, "below", flagged, payments, low, expected_share, p))
    return breaches


def _breach(
    what: str, side: str, k: int, n: int, share: float, expected: float, p: float
) -> dict[str, Any]:
    return {
        "check": f"{what} share {side} its band",
        "count": k,
        "of": n,
        "share": round(share, 4),
        "expected": round(expected, 4),
        "p_value": p,
    }


def score_psi(scores: np.ndarray, expected: Expectations) -> float:
    return psi(expected.score_shares, bin_shares(scores, expected.score_edges))


def canary_checks(
    trial: pd.DataFrame, expected: Expectations, config: GuardrailConfig
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The challenger's trial so far. `trial`: one row per payment it scored, canary or
    shadow (customer_id, score, decision, error, and the champion's `champion_decision`
    on the same payment when it was a shadow)."""
    scored = trial.dropna(subset=["score"])
    breaches = decision_breaches(scored, expected, config, both_ways=True)
    figures = {"canary_score_psi": math.nan, "agreement_auc": math.nan}
    if len(scored) >= config.canary_min_scores:
        figures["canary_score_psi"] = score_psi(scored["score"].to_numpy(np.float64), expected)
        if figures["canary_score_psi"] > config.canary_score_psi_above:
            breaches.append(
                {
                    "check": "score distribution off its reference",
                    "psi": round(figures["canary_score_psi"], 4),
                    "scores": len(scored),
                }
            )
    paired = scored.dropna(subset=["champion_decision"])
    champion_flagged = paired["champion_decision"].isin(FLAGGED)
    if champion_flagged.sum() >= config.canary_min_champion_flags and not champion_flagged.all():
        figures["agreement_auc"] = float(roc_auc_score(champion_flagged, paired["score"]))
        if figures["agreement_auc"] < config.canary_min_agreement_auc:
            breaches.append(
                {
                    "check": "ranks the champion's flagged payments no higher than the rest",
                    "auc": round(figures["agreement_auc"], 4),
                    "champion_flags": int(champion_flagged.sum()),
                    "payments": len(paired),
                }
            )
    errors = float(trial["error"].notna().mean()) if len(trial) else 0.0
    if errors > config.canary_max_error_rate:
        breaches.append({"check": "shadow errors", "share": round(errors, 4)})
    return breaches, figures


def run_guardrail(
    window: pd.DataFrame,
    champion: Expectations | None,
    config: GuardrailConfig,
    trial: pd.DataFrame | None = None,
    challenger: Expectations | None = None,
) -> Finding:
    """Every check above over one window (and the challenger's trial, if one runs)."""
    champ = window[window["route"] == "champion"] if len(window) else window
    customers = int(champ["customer_id"].nunique()) if len(champ) else 0
    metrics: dict[str, float] = {"customers": float(customers)}
    details: dict[str, Any] = {}
    canary: list[dict[str, Any]] = []
    if trial is not None and challenger is not None and len(trial):
        canary, figures = canary_checks(trial, challenger, config)
        metrics |= figures | {"canary_breaches": float(len(canary))}
        details["canary"] = canary
        details["challenger_version"] = challenger.version
    if champion is None or customers < config.min_customers:
        finding = Finding(
            job="guardrail",
            status="ok" if canary else "insufficient_data",
            summary=f"{customers} customers in the window (fewer than "
            f"{config.min_customers}, or no champion reference)"
            + (f"; challenger: {_listed(canary)}" if canary else ""),
            metrics=metrics,
            details=details,
        )
        return finding
    inputs = input_failures(champ, champion, config)
    decisions = decision_breaches(
        champ[["customer_id", "model_decision"]].rename(columns={"model_decision": "decision"}),
        champion,
        config,
        both_ways=False,
    )
    fallback_share = float(champ["fallback"].mean())
    metrics |= {
        "input_failures": float(len(inputs)),
        "decision_breaches": float(len(decisions)),
    }
    if len(champ) >= config.fallback_min_answers:  # fewer: no rate to judge
        metrics["fallback_rate"] = fallback_share
    if len(champ) >= config.score_psi_min_requests:
        metrics["score_psi"] = score_psi(champ["score"].to_numpy(np.float64), champion)
    details |= {"inputs": inputs, "decisions": decisions, "champion_version": champion.version}
    problems = [f"input {f['feature']} {f['check']}" for f in inputs]
    problems += [f"champion {b['check']}" for b in decisions]
    problems += [f"challenger {b['check']}" for b in canary]
    summary = (
        f"{customers} customers, {len(champ)} champion answers: "
        + ("; ".join(problems) if problems else "inputs and decisions within band")
        + f"; fallbacks {fallback_share:.0%}"
    )
    return Finding(job="guardrail", status="ok", summary=summary, metrics=metrics, details=details)


def _listed(breaches: list[dict[str, Any]]) -> str:
    return "; ".join(b["check"] for b in breaches)
