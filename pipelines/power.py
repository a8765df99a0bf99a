"""Statistical power: how many frauds a comparison needs before it can tell, and what a
canary costs to get them.

The gate and the canary compare average precision with a bootstrap; its standard error
shrinks as one over the square root of the frauds in the sample (the payments without
fraud matter far less: AP is a mean over frauds). From the standard error measured at
n frauds, a difference `delta` is found with 80% power by a one-sided 5% test (the
gate's rule: the 90% interval's lower end above zero) once

    frauds >= n * ((z_0.95 + z_0.80) * se / delta)^2

The canary table turns frauds into days. Two ways of comparing exist: paired, the
challenger shadow-scoring the champion's traffic (every payment is evidence, whatever
the share routed to it), and by arms, the canary's own payments against the
champion's, which needs a share `s` of the traffic: the variance of a difference of two
independent APs grows as 1/s + 1/(1 - s). The exposure is what the share costs: the
payments the challenger decides while the evidence gathers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z_ONE_SIDED_5 = 1.6449  # the gate: the 90% interval's lower end above zero
Z_POWER_80 = 0.8416
CANARY_SHARES = (0.05, 0.1, 0.2, 0.5)


def frauds_needed(se: float, frauds: int, delta: float) -> float:
    """Frauds for 80% power to find `delta`, from a standard error `se` at `frauds`."""
    if not (math.isfinite(se) and frauds > 0 and delta > 0):
        return math.nan
    return frauds * ((Z_ONE_SIDED_5 + Z_POWER_80) * se / delta) ** 2


@dataclass(frozen=True)
class CanaryPlan:
    share: float  # of traffic routed to the challenger
    days_paired: float  # shadow on all champion traffic: independent of the share
    days_by_arms: float
    payments_exposed: float  # decided by the challenger over days_by_arms


def canary_plans(
    paired_se: float,
    single_se: float,
    frauds: int,
    delta: float,
    frauds_per_day: float,
    payments_per_day: float,
) -> list[CanaryPlan]:
    """`paired_se`: the AP difference's standard error at `frauds` (the gate's);
    `single_se`: one model's AP standard error at `frauds`; rates: labelled frauds and
    payments a day of served traffic."""
    paired_days = frauds_needed(paired_se, frauds, delta) / frauds_per_day
    plans = []
    for share in CANARY_SHARES:
        # Two independent APs, from share and 1 - share of the frauds.
        arms_se = single_se * math.sqrt(1 / share + 1 / (1 - share))
        days = frauds_needed(arms_se, frauds, delta) / frauds_per_day
        plans.append(CanaryPlan(share, paired_days, days, share * payments_per_day * days))
    return plans
