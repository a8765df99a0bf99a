"""Who decides a payment: the champion, or the challenger for a sticky canary share.

A customer's bucket is a hash of their id, so the same customer always gets the same
model (no flip-flopping decisions for one card) and raising the share only adds
customers to the canary, never swaps them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

_SALT = b"fraudlab-canary-v1"  # change to reshuffle who is in the canary


def customer_bucket(customer_id: int) -> float:
    """A stable number in [0, 1) per customer."""
    digest = hashlib.blake2b(str(customer_id).encode(), digest_size=8, key=_SALT).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass
class RoutingPolicy:
    canary_share: float = 0.0
    shadow: bool = True

    def route(self, customer_id: int, has_challenger: bool) -> str:
        if has_challenger and customer_bucket(customer_id) < self.canary_share:
            return "canary"
        return "champion"
