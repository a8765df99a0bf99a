"""The rules baseline: what a fraud team writes before it has a model.

Every comparison table starts here, before logistic regression, because "what does the
model buy over rules?" is the question a business asks first. The rules are the round
numbers a team would set from its loss reports, each firing on about 1% of payments or
less (so one rule alone does not flood the analysts), not fitted to our labels: a large
amount, an amount far above the card's habit, a burst of payments, a terminal with
recent chargebacks, a card with a fraud reported in the last week. The score is the
number of rules a payment breaks; within a count, larger amounts first (the tie-break
adds under 0.1), since an analyst with a queue starts with the money. It is divided by
one more than the number of rules to lie in [0, 1) like a model's, but it is a rank,
not a probability.

A rule whose feature the frame lacks (a feature service without it) is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Rule:
    name: str
    feature: str
    threshold: float
    above: bool = True  # breaks at or above the threshold; False: at or below

    def breaks(self, frame: pd.DataFrame) -> npt.NDArray[np.bool_]:
        values = frame[self.feature].to_numpy(np.float64, na_value=np.nan)
        if self.above:
            return np.nan_to_num(values, nan=-np.inf) >= self.threshold  # missing: no
        return np.nan_to_num(values, nan=np.inf) <= self.threshold


RULES = (
    Rule("amount 200+", "amount", 200.0),
    Rule("3x the card's 30-day mean", "amount_to_customer_mean_30d", 3.0),
    Rule("3+ payments in an hour", "customer_payments_1h", 3.0),
    Rule("terminal's known fraud rate 10%+", "terminal_fraud_rate_30d", 0.10),
    Rule("card's fraud reported in the last 7 days", "customer_days_since_known_fraud", 7.0, False),
)


def rules_threshold(broken: int) -> float:
    """The score at which `broken` rules are broken."""
    return broken / (len(RULES) + 1)


def rules_score(frame: pd.DataFrame) -> FloatArray:
    """Rules broken per payment, plus amount / 1e7 to order payments within a count,
    over len(RULES) + 1."""
    broken = np.zeros(len(frame))
    for rule in RULES:
        if rule.feature in frame:
            broken += rule.breaks(frame)
    return (broken + frame["amount"].to_numpy(np.float64) / 1e7) / (len(RULES) + 1)
