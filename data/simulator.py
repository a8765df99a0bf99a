"""A seeded simulator of card payments with named fraud patterns and delayed labels.

Customers live at a point in a 100 x 100 square and pay at one of their nearest
terminals; how much and how often is their own spending profile. Fraud comes from the
patterns in data/patterns.py. Every random draw comes from a generator keyed by
(seed, purpose, day), so the history is the same however it is chunked, and the file is
written day by day: memory stays flat from 10k to 10M rows.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.neighbors import NearestNeighbors

from data.patterns import (
    DAY_US,
    LEGITIMATE,
    PATTERN_NAMES,
    CardTesting,
    CompromisedTerminal,
    DayPayments,
    FraudPattern,
    LargeAmount,
    LeakedCard,
    Schedule,
)
from data.schema import OPTIONAL_COLUMNS, TIMESTAMP, TRANSACTIONS_SCHEMA
from fraudlab.errors import ConfigError
from fraudlab.settings import SimulationSettings

CHARGEBACK_WINDOW_DAYS = 60  # card schemes allow disputes for weeks; after this "legit" is final
REPORT_PROBABILITY = 0.9  # some victims never notice or never dispute a fraudulent payment
MEDIAN_REPORT_DELAY_DAYS = 7.0  # a statement cycle or so before the victim disputes
REPORT_DELAY_SIGMA = 0.8  # lognormal spread: most reports in 2-25 days, a few much later
MIN_REPORT_DELAY_DAYS = 1 / 24  # the fastest dispute takes an hour
NEAREST_TERMINALS = 20  # a customer shops at the ~20 terminals closest to home
MAX_MEAN_PAYMENTS_PER_DAY = 4.0  # customers' mean daily payments ~ U(0, 4): ~2 a day on average
MAX_MEAN_AMOUNT = 100.0  # customers' mean amount ~ U(5, 100), std = mean / 2
MIN_AMOUNT = 0.5  # normal amounts are floored here: no free or negative payments
TIME_OF_DAY_STD_HOURS = 5.5  # payments centre on noon; nights are quiet, not empty
COMPROMISED_TERMINAL_DAILY_SHARE = 1e-4  # ~0.4 terminals a day at 4k: ~0.3% of payments
LEAKED_CARD_DAILY_SHARE = 4e-4  # ~0.8 cards a day at 2k customers: ~0.2% of payments
CARD_TESTING_DAILY_SHARE = 1e-3  # ~2 bursts a day at 2k customers once the pattern starts
ROW_GROUP_ROWS = 262_144  # days are buffered into row groups of at least this size

# Purposes of the random streams; keys are always (seed, purpose, index) of equal length.
_POPULATION, _SCHEDULE, _PAYMENTS, _LABELS, _PATTERN = 1, 2, 3, 4, 10


@dataclass(frozen=True)
class SimulationConfig:
    """Size, seed and calendar of one simulated history."""

    customers: int
    terminals: int
    days: int
    seed: int
    start_date: date
    new_pattern_start_day: int | None = None  # card testing starts here; None = never
    new_pattern_daily_share: float = CARD_TESTING_DAILY_SHARE  # cards tested per customer-day

    def __post_init__(self) -> None:
        for name in ("customers", "terminals", "days"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"simulation {name} must be at least 1, got {getattr(self, name)}"
                )
        if self.seed < 0:
            raise ConfigError(f"simulation seed must be >= 0, got {self.seed}")
        if not 0 < self.new_pattern_daily_share <= 1:
            raise ConfigError(
                f"new pattern daily share must be in (0, 1], got {self.new_pattern_daily_share}"
            )
        start = self.new_pattern_start_day
        if start is not None and not 0 <= start < self.days:
            raise ConfigError(
                f"new pattern start day must be in [0, {self.days - 1}] (days), got {start}"
            )

    @classmethod
    def from_settings(cls, settings: SimulationSettings) -> SimulationConfig:
        return cls(
            customers=settings.customers,
            terminals=settings.terminals,
            days=settings.days,
            seed=settings.seed,
            start_date=parse_start_date(settings.start_date),
        )


def parse_start_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"start date must look like 2026-01-31, got {text!r}") from None


@dataclass(frozen=True)
class GenerationSummary:
    path: Path
    rows: int
    frauds: int
    fraud_rate: float
    reported_share: float  # share of frauds that ever get a chargeback label
    pattern_counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Population:
    """Who pays where: customer profiles and each customer's nearby terminals."""

    mean_amount: np.ndarray
    std_amount: np.ndarray
    mean_payments_per_day: np.ndarray
    nearby_terminals: np.ndarray  # (customers, k) terminal ids


def _rng(config: SimulationConfig, purpose: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([config.seed, purpose, index]))


def draw_population(config: SimulationConfig) -> Population:
    rng = _rng(config, _POPULATION)
    homes = rng.uniform(0, 100, size=(config.customers, 2))
    mean_amount = rng.uniform(5, MAX_MEAN_AMOUNT, size=config.customers)
    mean_payments = rng.uniform(0, MAX_MEAN_PAYMENTS_PER_DAY, size=config.customers)
    terminal_xy = rng.uniform(0, 100, size=(config.terminals, 2))
    k = min(NEAREST_TERMINALS, config.terminals)
    nearby = NearestNeighbors(n_neighbors=k).fit(terminal_xy).kneighbors(homes)[1]
    return Population(mean_amount, mean_amount / 2, mean_payments, nearby.astype(np.int64))


def build_patterns(config: SimulationConfig) -> list[FraudPattern]:
    """The patterns in the order they claim payments; schedules are drawn here, up front."""
    rng = _rng(config, _SCHEDULE)
    terminal_schedule = Schedule.draw(
        rng, config.terminals, COMPROMISED_TERMINAL_DAILY_SHARE, config.days
    )
    card_schedule = Schedule.draw(rng, config.customers, LEAKED_CARD_DAILY_SHARE, config.days)
    patterns: list[FraudPattern] = [
        CompromisedTerminal(terminal_schedule, config.terminals),
        LeakedCard(card_schedule, config.customers),
        LargeAmount(),
    ]
    if config.new_pattern_start_day is not None:
        testing_rng = _rng(config, _SCHEDULE, 1)  # own stream: switching it on changes nothing else
        testing_schedule = Schedule.draw(
            testing_rng, config.customers, config.new_pattern_daily_share, config.days
        )
        patterns.append(
            CardTesting(testing_schedule, config.terminals, config.new_pattern_start_day)
        )
    return patterns


def normal_payments(config: SimulationConfig, population: Population, day: int) -> DayPayments:
    """The day's legitimate spending: every customer pays as their profile says."""
    rng = _rng(config, _PAYMENTS, day)
    counts = rng.poisson(population.mean_payments_per_day)
    customer = np.repeat(np.arange(config.customers, dtype=np.int64), counts)
    n = len(customer)
    choice = rng.integers(0, population.nearby_terminals.shape[1], size=n)
    seconds = rng.normal(43_200, TIME_OF_DAY_STD_HOURS * 3_600, size=n)
    # Wrapped around midnight rather than clipped, so no spike of payments at 00:00:00.
    time_us = np.mod(np.round(seconds * 1e6).astype(np.int64), DAY_US)
    amount = rng.normal(population.mean_amount[customer], population.std_amount[customer])
    return DayPayments(
        customer_id=customer,
        terminal_id=population.nearby_terminals[customer, choice],
        time_of_day_us=time_us,
        amount=np.round(np.maximum(amount, MIN_AMOUNT), 2),
        pattern=np.zeros(n, dtype=np.int8),
    )


def label_delays_us(rng: np.random.Generator, is_fraud: np.ndarray) -> np.ndarray:
    """Microseconds until each label is known; -1 marks a fraud that is never reported."""
    n = len(is_fraud)
    # Separate child streams: appending rows (card testing) leaves earlier rows' draws alone.
    delay_rng, report_rng = rng.spawn(2)
    delay_days = np.exp(
        delay_rng.normal(np.log(MEDIAN_REPORT_DELAY_DAYS), REPORT_DELAY_SIGMA, size=n)
    )
    delay_days = np.clip(delay_days, MIN_REPORT_DELAY_DAYS, CHARGEBACK_WINDOW_DAYS)
    reported = report_rng.random(n) < REPORT_PROBABILITY
    fraud_delay = np.where(reported, np.round(delay_days * DAY_US), -1).astype(np.int64)
    return np.where(is_fraud, fraud_delay, CHARGEBACK_WINDOW_DAYS * DAY_US)


def simulate_day(
    config: SimulationConfig,
    population: Population,
    patterns: list[FraudPattern],
    day: int,
    first_id: int,
) -> pa.Table:
    """One day of payments, in time order, with ids counting on from `first_id`."""
    payments = normal_payments(config, population, day)
    for code, pattern in enumerate(patterns):
        payments = pattern.apply(day, payments, _rng(config, _PATTERN + code, day))
    is_fraud = payments.pattern != LEGITIMATE
    delay_us = label_delays_us(_rng(config, _LABELS, day), is_fraud)
    order = np.argsort(payments.time_of_day_us, kind="stable")
    day_start_us = _epoch_us(config.start_date) + day * DAY_US
    event_us = day_start_us + payments.time_of_day_us[order]
    delay_us = delay_us[order]
    columns = {
        "transaction_id": pa.array(np.arange(first_id, first_id + len(order), dtype=np.int64)),
        "event_timestamp": pa.array(event_us, type=TIMESTAMP),
        "customer_id": pa.array(payments.customer_id[order]),
        "terminal_id": pa.array(payments.terminal_id[order]),
        "amount": pa.array(payments.amount[order]),
        "is_fraud": pa.array(is_fraud[order].astype(np.int8)),
        "label_available_at": pa.array(event_us + delay_us, type=TIMESTAMP, mask=delay_us < 0),
        "fraud_pattern": pa.array(np.asarray(PATTERN_NAMES, dtype=object)[payments.pattern[order]]),
    }
    return pa.table(columns, schema=OUTPUT_SCHEMA)


OUTPUT_SCHEMA = TRANSACTIONS_SCHEMA.append(
    pa.field("fraud_pattern", OPTIONAL_COLUMNS["fraud_pattern"])
)


def _epoch_us(day0: date) -> int:
    midnight = datetime(day0.year, day0.month, day0.day, tzinfo=UTC)
    return int(midnight.timestamp()) * 1_000_000


def iter_days(config: SimulationConfig) -> Iterator[pa.Table]:
    """The history day by day, as Arrow tables in the output schema."""
    population = draw_population(config)
    patterns = build_patterns(config)
    next_id = 0
    for day in range(config.days):
        table = simulate_day(config, population, patterns, day, next_id)
        next_id += table.num_rows
        yield table


def generate(
    config: SimulationConfig, out: Path, on_day: Callable[[int], None] | None = None
) -> GenerationSummary:
    """Write the simulated history to one Parquet file at `out`, atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tally = _Tally()
    handle, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    tmp.chmod(0o644)  # mkstemp makes it private; the data file is an ordinary one
    try:
        with pq.ParquetWriter(tmp, OUTPUT_SCHEMA) as writer:
            buffered: list[pa.Table] = []
            for day, table in enumerate(iter_days(config)):
                tally.add(table)
                buffered.append(table)
                if sum(t.num_rows for t in buffered) >= ROW_GROUP_ROWS:
                    writer.write_table(pa.concat_tables(buffered))
                    buffered = []
                if on_day is not None:
                    on_day(day)
            if buffered:
                writer.write_table(pa.concat_tables(buffered))
        tmp.replace(out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return tally.summary(out)


@dataclass
class _Tally:
    rows: int = 0
    frauds: int = 0
    reported: int = 0
    pattern_counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(PATTERN_NAMES[1:], 0)
    )

    def add(self, table: pa.Table) -> None:
        pattern = table.column("fraud_pattern").to_numpy(zero_copy_only=False)
        labelled = table.column("label_available_at").is_valid().to_numpy(zero_copy_only=False)
        fraud = pattern != ""
        self.rows += table.num_rows
        self.frauds += int(fraud.sum())
        self.reported += int((fraud & labelled).sum())
        names, counts = np.unique(pattern[fraud], return_counts=True)
        for name, count in zip(names, counts, strict=True):
            self.pattern_counts[str(name)] += int(count)

    def summary(self, path: Path) -> GenerationSummary:
        return GenerationSummary(
            path=path,
            rows=self.rows,
            frauds=self.frauds,
            fraud_rate=self.frauds / self.rows if self.rows else 0.0,
            reported_share=self.reported / self.frauds if self.frauds else 0.0,
            pattern_counts=dict(self.pattern_counts),
        )
