"""The payment-state views in Feast's online store: read, merge a batch of payment
events in, write back. One function does it for both writers: serving itself in the
embedded profile (one event, right after the answer) and the stream worker in
production (a batch per read from the stream).

Reads and writes go through the provider's `online_read` and `online_write_batch`,
the calls `get_online_features` and `write_to_online_store` make, without the
DataFrame round trip. A state row is stamped with its newest payment's time, and never
earlier than the row it replaces (+1 us): Feast's Redis store skips a write that is not
strictly newer than what it holds, which would drop a late payment's merge.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from features.velocity import STATE_FIELDS, STATE_VIEWS, PaymentState

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

KINDS = tuple(STATE_VIEWS)  # "customer", "terminal"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class PaymentEvent:
    """A scored payment, as the state views need it (and the stream carries it)."""

    transaction_id: int
    customer_id: int
    terminal_id: int
    amount: float
    event_us: int  # the payment's time, UTC microseconds
    served_us: int  # the service's clock when it answered: what stream lag is measured in

    def entity(self, kind: str) -> int:
        return self.customer_id if kind == "customer" else self.terminal_id

    def as_state(self) -> PaymentState:
        return state_of_events([self])

    def to_fields(self) -> dict[str, str]:
        return {name: str(getattr(self, name)) for name in self.__dataclass_fields__}

    @classmethod
    def from_fields(cls, fields: dict[Any, Any]) -> PaymentEvent:
        text = {text_of(k): text_of(v) for k, v in fields.items()}
        return cls(
            transaction_id=int(text["transaction_id"]),
            customer_id=int(text["customer_id"]),
            terminal_id=int(text["terminal_id"]),
            amount=float(text["amount"]),
            event_us=int(text["event_us"]),
            served_us=int(text["served_us"]),
        )


def text_of(value: Any) -> str:
    """A Redis reply's bytes (or anything) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def transaction_key(transaction_id: str) -> int:
    """The int64 a state dedupes a payment by: the id itself when it is one (the
    transactions file's ids, as replay sends them), else a stable 63-bit hash."""
    if transaction_id.isdigit() and int(transaction_id) < 2**63:
        return int(transaction_id)
    digest = hashlib.blake2b(transaction_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def state_of_row(row: dict[str, Value] | None) -> PaymentState:
    """A state view's stored row as a PaymentState (no row: no payments yet)."""
    value = row.get("payments") if row else None
    if value is None or value.WhichOneof("val") != "bytes_val":
        return PaymentState.empty()
    return PaymentState.unpacked(value.bytes_val)


def _row_of_state(state: PaymentState) -> dict[str, Value]:
    return {"payments": Value(bytes_val=state.packed())}


def entity_key(kind: str, entity_id: int) -> EntityKey:
    return EntityKey(join_keys=[f"{kind}_id"], entity_values=[Value(int64_val=int(entity_id))])


class PaymentStates:
    """The two state views of one feature store."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self._provider = store._get_provider()
        self.views: dict[str, FeatureView] = {
            kind: store.get_feature_view(view) for kind, view in STATE_VIEWS.items()
        }
        if store.config.online_store.type == "sqlite":
            # Feast's SQLite store commits in the default rollback journal, one fsync per
            # write (6.5 ms a payment here). WAL with synchronous=NORMAL syncs at
            # checkpoints instead (0.9 ms), and lets serving's reads run beside a write.
            conn = self._provider.online_store._get_conn(store.config)  # type: ignore[attr-defined]
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")

    def read(self, kind: str, ids: list[int]) -> list[tuple[PaymentState, datetime | None]]:
        rows = self._provider.online_read(
            config=self.store.config,
            table=self.views[kind],
            entity_keys=[entity_key(kind, i) for i in ids],
            requested_features=list(STATE_FIELDS),
        )
        return [(state_of_row(row), stamp) for stamp, row in rows]

    def apply(self, events: Iterable[PaymentEvent], kinds: tuple[str, ...] = KINDS) -> int:
        """Merge the events into their customers' and terminals' states (or only those
        of `kinds`); returns the rows written (a replayed or retried event changes
        nothing and writes nothing)."""
        events = list(events)
        written = 0
        for kind in kinds:
            by_entity: dict[int, list[PaymentEvent]] = {}
            for event in events:
                by_entity.setdefault(event.entity(kind), []).append(event)
            incoming = {key: _merged_events(mine, kind) for key, mine in by_entity.items()}
            ids = list(incoming)
            if not ids:
                continue
            data: list[tuple[EntityKey, dict[str, Value], datetime, datetime | None]] = []
            for key, (stored, stamp) in zip(ids, self.read(kind, ids), strict=True):
                merged, changed = stored.changed_by(incoming[key], kind)
                if not changed:
                    continue
                data.append(
                    (entity_key(kind, key), _row_of_state(merged), _row_stamp(merged, stamp), None)
                )
            if data:
                self._provider.online_write_batch(
                    config=self.store.config, table=self.views[kind], data=data, progress=None
                )
                written += len(data)
        return written


def state_of_events(events: list[PaymentEvent]) -> PaymentState:
    """The events' payments as a state, in the order given (merge it to sort and dedupe)."""
    return PaymentState.of(
        [e.transaction_id for e in events],
        [e.event_us for e in events],
        [e.amount for e in events],
        [e.terminal_id for e in events],
    )


def _merged_events(events: list[PaymentEvent], kind: str) -> PaymentState:
    if len(events) == 1:
        return state_of_events(events)
    return PaymentState.empty().merged(state_of_events(events), kind)


def _row_stamp(state: PaymentState, previous: datetime | None) -> datetime:
    newest = EPOCH + timedelta(microseconds=int(state.times_us.max()))
    if previous is None:
        return newest
    previous = previous if previous.tzinfo else previous.replace(tzinfo=UTC)
    return max(newest, previous + timedelta(microseconds=1))


def state_arrays_equal(a: PaymentState, b: PaymentState) -> bool:
    return bool(
        np.array_equal(a.ids, b.ids)
        and np.array_equal(a.times_us, b.times_us)
        and np.array_equal(a.amounts, b.amounts)
        and np.array_equal(a.terminals, b.terminals)
    )
