"""Request-time velocity features, defined once: what a customer and a terminal did in
the minutes, hour and day before a payment, the payment's own day included.

A daily snapshot cannot carry these (a card-testing burst is over before the next
midnight), so they are computed at the payment from the entity's recent payments:
- online, from a small per-entity state in Feast's online store (the payment-state
  views), updated by every scored payment (serving/velocity_updates.py);
- offline, by DuckDB from the raw transactions (features/velocity_offline.py), one row
  per payment, joined like any other view.
Both sides call nothing but the definitions below: tests/features/test_velocity.py
holds the offline SQL to `customer_velocity` and `terminal_velocity`, and the
brute-force test (tests/pipelines/test_training_set.py) recomputes every value by hand.

"Before the payment" is strict: payments at an earlier instant, never the payment
itself nor another one at the same microsecond, so a retried request sees the same
history as its first try. The state is a set (merged by transaction id, ordered by
time, pruned by age), so it ends the same whatever order or how often events arrive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MINUTE_US = 60 * 1_000_000
DAY_US = 24 * 60 * MINUTE_US
# Windows ending at the payment; "24h" keeps these apart from the midnight snapshots' "1d".
CUSTOMER_WINDOWS = {"10m": 10 * MINUTE_US, "1h": 60 * MINUTE_US, "24h": DAY_US}
TERMINAL_WINDOWS = {"1h": 60 * MINUTE_US}
# A state keeps what its longest window needs plus the payments' accepted lateness
# (a payment a day late still sees its full day), and at most this many payments.
STATE_RETENTION_US = {"customer": 2 * DAY_US, "terminal": DAY_US + 60 * MINUTE_US}
STATE_MAX_PAYMENTS = 500

CUSTOMER_VELOCITY_FEATURES = [
    *(f"customer_payments_{w}" for w in CUSTOMER_WINDOWS),
    *(f"customer_amount_sum_{w}" for w in CUSTOMER_WINDOWS),
    *(f"customer_amount_mean_{w}" for w in CUSTOMER_WINDOWS),
    *(f"customer_amount_max_{w}" for w in CUSTOMER_WINDOWS),
    "customer_seconds_since_previous",
    "customer_terminals_today",
]
TERMINAL_VELOCITY_FEATURES = [f"terminal_payments_{w}" for w in TERMINAL_WINDOWS]
# The velocity view of an entity kind, and the online state view it is computed from.
VELOCITY_VIEWS = {"customer_velocity": "customer", "terminal_velocity": "terminal"}
STATE_VIEWS = {"customer": "customer_payment_state", "terminal": "terminal_payment_state"}
# A state is one field, its payments packed as little-endian records (id, time, amount,
# terminal): one value to read and write per entity instead of four lists, which cut
# the stream worker's time per payment (benchmarks/stream.py).
STATE_FIELDS = ["payments"]
PACKED = np.dtype([("id", "<i8"), ("time_us", "<i8"), ("amount", "<f8"), ("terminal", "<i8")])

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class PaymentState:
    """An entity's recent payments, sorted by (time, id), ids unique."""

    ids: IntArray
    times_us: IntArray
    amounts: FloatArray
    terminals: IntArray

    @classmethod
    def empty(cls) -> PaymentState:
        none = np.empty(0, dtype=np.int64)
        return cls(none, none, np.empty(0, dtype=np.float64), none)

    @classmethod
    def of(
        cls,
        ids: npt.ArrayLike,
        times_us: npt.ArrayLike,
        amounts: npt.ArrayLike,
        terminals: npt.ArrayLike,
    ) -> PaymentState:
        return cls(
            np.asarray(ids, dtype=np.int64),
            np.asarray(times_us, dtype=np.int64),
            np.asarray(amounts, dtype=np.float64),
            np.asarray(terminals, dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def packed(self) -> bytes:
        records = np.empty(len(self), dtype=PACKED)
        records["id"], records["time_us"] = self.ids, self.times_us
        records["amount"], records["terminal"] = self.amounts, self.terminals
        return records.tobytes()

    @classmethod
    def unpacked(cls, data: bytes) -> PaymentState:
        records = np.frombuffer(data, dtype=PACKED)
        return cls(
            records["id"].astype(np.int64),
            records["time_us"].astype(np.int64),
            records["amount"].astype(np.float64),
            records["terminal"].astype(np.int64),
        )

    def merged(self, other: PaymentState, kind: str) -> PaymentState:
        """The union by transaction id, pruned to the kind's retention and cap. Commutative
        and idempotent, so a retry, a redelivery or another order gives the same state."""
        if self._appends(other):  # the usual case, newer payments in order: no sort
            return self._appended(other, kind)
        ids = np.concatenate([self.ids, other.ids])
        times = np.concatenate([self.times_us, other.times_us])
        amounts = np.concatenate([self.amounts, other.amounts])
        terminals = np.concatenate([self.terminals, other.terminals])
        _, first = np.unique(ids, return_index=True)  # a repeated id keeps its first copy
        order = first[np.lexsort((ids[first], times[first]))]
        if len(order):
            keep = times[order] >= times[order[-1]] - STATE_RETENTION_US[kind]
            order = order[keep][-STATE_MAX_PAYMENTS:]
        return PaymentState(ids[order], times[order], amounts[order], terminals[order])

    def _appends(self, other: PaymentState) -> bool:
        """Is `other` sorted, without repeats, and entirely after this state?"""
        t = other.times_us
        if len(t) == 0 or (len(self) and t[0] <= self.times_us[-1]):
            return False
        if len(t) == 1:
            return True
        return bool(np.all(t[1:] > t[:-1]))  # strictly later, so no repeated payment either

    def _appended(self, other: PaymentState, kind: str) -> PaymentState:
        ids = np.concatenate([self.ids, other.ids])
        times = np.concatenate([self.times_us, other.times_us])
        start = int(np.searchsorted(times, times[-1] - STATE_RETENTION_US[kind], side="left"))
        start = max(start, len(ids) - STATE_MAX_PAYMENTS)
        return PaymentState(
            ids[start:],
            times[start:],
            np.concatenate([self.amounts, other.amounts])[start:],
            np.concatenate([self.terminals, other.terminals])[start:],
        )

    def changed_by(self, other: PaymentState, kind: str) -> tuple[PaymentState, bool]:
        merged = self.merged(other, kind)
        return merged, not np.array_equal(merged.ids, self.ids)


def customer_velocity(state: PaymentState, at_us: int) -> dict[str, float]:
    """The customer's velocity features for a payment at `at_us` (UTC microseconds)."""
    before = state.times_us < at_us
    times, amounts = state.times_us[before], state.amounts[before]
    values: dict[str, float] = {}
    for name, width in CUSTOMER_WINDOWS.items():
        window = amounts[times >= at_us - width]
        n = len(window)
        values[f"customer_payments_{name}"] = float(n)
        values[f"customer_amount_sum_{name}"] = float(window.sum())
        values[f"customer_amount_mean_{name}"] = float(window.mean()) if n else np.nan
        values[f"customer_amount_max_{name}"] = float(window.max()) if n else np.nan
    recent = times >= at_us - DAY_US
    values["customer_seconds_since_previous"] = (
        (at_us - float(times[recent].max())) / 1e6 if recent.any() else np.nan
    )
    midnight = at_us - at_us % DAY_US
    values["customer_terminals_today"] = float(
        len(np.unique(state.terminals[before][times >= midnight]))
    )
    return {name: values[name] for name in CUSTOMER_VELOCITY_FEATURES}


def terminal_velocity(state: PaymentState, at_us: int) -> dict[str, float]:
    """The terminal's velocity features for a payment at `at_us`."""
    times = state.times_us[state.times_us < at_us]
    return {
        f"terminal_payments_{name}": float(np.count_nonzero(times >= at_us - width))
        for name, width in TERMINAL_WINDOWS.items()
    }


VELOCITY_OF = {"customer": customer_velocity, "terminal": terminal_velocity}
