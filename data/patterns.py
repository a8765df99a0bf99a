"""Named fraud patterns: each one turns some of a day's payments into fraud.

A pattern is a small frozen object with a `name` and an `apply(day, payments, rng)` that
returns the day's payments with its fraud marked (and, for some, rows changed or added).
Which terminals or cards a pattern hits, and when, is a `Schedule` drawn once, up front,
from the seed; so generating the history day by day, in any chunking, gives the same data.
Patterns only mark payments that are still legitimate: the first pattern to claim a
payment names it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, Protocol

import numpy as np

# Index = the code stored in DayPayments.pattern; "" (code 0) is a legitimate payment.
PATTERN_NAMES: tuple[str, ...] = (
    "",
    "large_amount",
    "compromised_terminal",
    "leaked_card",
    "card_testing",
)
LEGITIMATE = 0
DAY_US = 86_400 * 1_000_000


def pattern_code(name: str) -> int:
    return PATTERN_NAMES.index(name)


@dataclass(frozen=True)
class DayPayments:
    """One day's payments as parallel numpy arrays, in no particular order."""

    customer_id: np.ndarray  # int64
    terminal_id: np.ndarray  # int64
    time_of_day_us: np.ndarray  # int64, microseconds since midnight UTC, in [0, DAY_US)
    amount: np.ndarray  # float64, rounded to cents
    pattern: np.ndarray  # int8, index into PATTERN_NAMES; 0 = legitimate

    def __len__(self) -> int:
        return len(self.amount)

    def append(self, other: DayPayments) -> DayPayments:
        return DayPayments(
            *(np.concatenate([getattr(self, f), getattr(other, f)]) for f in _FIELDS)
        )


_FIELDS = ("customer_id", "terminal_id", "time_of_day_us", "amount", "pattern")


@dataclass(frozen=True)
class Schedule:
    """Which entity (terminal or card) is hit on which day, decided before generation."""

    entity_id: np.ndarray  # int64
    start_day: np.ndarray  # int64

    @classmethod
    def draw(
        cls, rng: np.random.Generator, population: int, daily_share: float, days: int
    ) -> Schedule:
        """Each day, Poisson(population * daily_share) entities chosen uniformly."""
        counts = rng.poisson(population * daily_share, size=days)
        entity_id = rng.integers(0, population, size=int(counts.sum()), dtype=np.int64)
        return cls(entity_id, np.repeat(np.arange(days, dtype=np.int64), counts))

    def active_mask(self, day: int, duration_days: int, population: int) -> np.ndarray:
        """Boolean mask over entities hit in the `duration_days` days after their start."""
        active = (self.start_day < day) & (day <= self.start_day + duration_days)
        mask = np.zeros(population, dtype=bool)
        mask[self.entity_id[active]] = True
        return mask


class FraudPattern(Protocol):
    name: ClassVar[str]

    def apply(self, day: int, payments: DayPayments, rng: np.random.Generator) -> DayPayments:
        """Return the day's payments with this pattern's fraud marked."""
        ...


def _claim(payments: DayPayments, hit: np.ndarray, name: str) -> np.ndarray:
    """Pattern codes with the still-legitimate payments in `hit` claimed by `name`."""
    pattern = payments.pattern.copy()
    pattern[hit & (pattern == LEGITIMATE)] = pattern_code(name)
    return pattern


@dataclass(frozen=True)
class LargeAmount:
    """Any payment above a fixed amount is fraud: the baseline rule every model must learn.

    It sits far in the tail of most customers' spending (mean <= 100, std = mean / 2).
    """

    name: ClassVar[str] = "large_amount"
    threshold: float = 220.0

    def apply(self, day: int, payments: DayPayments, rng: np.random.Generator) -> DayPayments:
        return replace(
            payments, pattern=_claim(payments, payments.amount > self.threshold, self.name)
        )


@dataclass(frozen=True)
class CompromisedTerminal:
    """A terminal compromised on day d makes every payment there fraud on days d+1..d+28.

    Only terminal history (its recent fraud rate, as known from chargebacks) reveals it.
    """

    name: ClassVar[str] = "compromised_terminal"
    schedule: Schedule
    terminals: int
    duration_days: int = 28

    def apply(self, day: int, payments: DayPayments, rng: np.random.Generator) -> DayPayments:
        compromised = self.schedule.active_mask(day, self.duration_days, self.terminals)
        hit = compromised[payments.terminal_id]
        return replace(payments, pattern=_claim(payments, hit, self.name))


@dataclass(frozen=True)
class LeakedCard:
    """A card leaked on day d: on days d+1..d+14 a third of its payments are fraud, at 5x.

    Only the customer's own history (amounts far above their usual) reveals it.
    """

    name: ClassVar[str] = "leaked_card"
    schedule: Schedule
    customers: int
    duration_days: int = 14
    fraud_share: float = 1 / 3
    amount_factor: float = 5.0

    def apply(self, day: int, payments: DayPayments, rng: np.random.Generator) -> DayPayments:
        leaked = self.schedule.active_mask(day, self.duration_days, self.customers)
        chosen = rng.random(len(payments)) < self.fraud_share
        hit = leaked[payments.customer_id] & chosen & (payments.pattern == LEGITIMATE)
        amount = payments.amount.copy()
        amount[hit] = np.round(amount[hit] * self.amount_factor, 2)
        return replace(payments, amount=amount, pattern=_claim(payments, hit, self.name))


@dataclass(frozen=True)
class CardTesting:
    """From `start_day` on, stolen cards are tested with bursts of tiny payments.

    Each burst is 3-8 payments of 1-5 at one terminal (anywhere, not near the card's home),
    a minute or so apart. Off in the default history; switched on for drift stories.
    """

    name: ClassVar[str] = "card_testing"
    schedule: Schedule  # start_day = the day of the burst
    terminals: int
    start_day: int
    burst_sizes: tuple[int, int] = (3, 8)
    amount_range: tuple[float, float] = (1.0, 5.0)
    mean_gap_seconds: float = 60.0

    def apply(self, day: int, payments: DayPayments, rng: np.random.Generator) -> DayPayments:
        if day < self.start_day:
            return payments
        customers = self.schedule.entity_id[self.schedule.start_day == day]
        sizes = rng.integers(self.burst_sizes[0], self.burst_sizes[1] + 1, size=len(customers))
        terminal = rng.integers(0, self.terminals, size=len(customers), dtype=np.int64)
        start_us = rng.integers(0, DAY_US // 2, size=len(customers)) + DAY_US // 4
        burst = np.repeat(np.arange(len(customers)), sizes)
        gaps_us = (rng.exponential(self.mean_gap_seconds, size=len(burst)) * 1e6).astype(np.int64)
        offset = np.cumsum(gaps_us) - np.repeat(np.cumsum(gaps_us)[np.cumsum(sizes) - sizes], sizes)
        low, high = self.amount_range
        added = DayPayments(
            customer_id=customers[burst],
            terminal_id=terminal[burst],
            time_of_day_us=np.minimum(start_us[burst] + offset, DAY_US - 1),
            amount=np.round(rng.uniform(low, high, size=len(burst)), 2),
            pattern=np.full(len(burst), pattern_code(self.name), dtype=np.int8),
        )
        return payments.append(added)
