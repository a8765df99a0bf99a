"""Exploration: a small random share of the payments the model would stop goes through.

Labels come from what the system decided: a declined payment never gets a chargeback,
so a model retrained or judged on the labels its champion let through never learns
what the champion stopped (docs/evaluation-plane.md, section 4). Approving a random
`share` of the reviews and declines, and logging each decision's probability (its
propensity), makes those payments' outcomes observable, and lets an offline estimate
weight each labelled payment by one over its propensity (inverse propensity weighting,
pipelines/feedback_loop.py).

The draw is a keyed hash of the transaction id, not a random number: it is as random as
a coin with respect to the payment's features, a client's retry of the same payment gets
the same answer, and a replay decides exactly as the first run did.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

_SALT = b"fraudlab-explore-v1"
APPROVE = "approve"


def stable_draw(key: str, salt: bytes) -> float:
    """A number in [0, 1) that depends only on `key` and `salt`."""
    digest = hashlib.blake2b(key.encode(), digest_size=8, key=salt).digest()
    return int.from_bytes(digest, "big") / 2**64


def explored(decision: pd.Series, model_decision: pd.Series) -> pd.Series:
    """Where exploration decided, row by row of the prediction log: the caller got an
    approval the model did not give (the breaker never approves, so nothing else turns
    a review or decline into one)."""
    return (decision == APPROVE) & (model_decision != APPROVE)


@dataclass(frozen=True)
class Exploration:
    share: float = 0.0  # of the payments the model stops; settings.serving.exploration_share

    def apply(self, transaction_id: str, served: str) -> tuple[str, float]:
        """The decision the caller gets and the probability this policy had of giving it,
        given the decision it would serve without exploring."""
        if served == APPROVE:
            return served, 1.0
        if self.share > 0.0 and stable_draw(transaction_id, _SALT) < self.share:
            return APPROVE, self.share
        return served, 1.0 - self.share
