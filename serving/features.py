"""Online features for one payment: the entity features read from Feast's online store
(on Redis every view in one round trip, on SQLite one read per view), the velocity
features computed from the payment-state views by their one definition
(features/velocity.py), then the shared request-time function (features/transforms.py),
the very code training used.

Missing, stale or unreachable features become NaN with an explicit, counted fallback
flag naming them, never a silent zero: the models were trained with NaN for missing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from features.definitions import SNAPSHOT_TTL
from features.transforms import request_features
from features.velocity import (
    STATE_FIELDS,
    STATE_VIEWS,
    VELOCITY_OF,
    VELOCITY_VIEWS,
    PaymentState,
)
from serving.velocity_state import micros, state_of_row

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView
    from feast.repo_config import RepoConfig

# One view's row as the store reads it: its timestamp and values (None, None: no row).
Row = tuple[datetime | None, dict[str, Value] | None]

log = logging.getLogger(__name__)
STORE_ERROR = "feature_store_unavailable"
OVER_BUDGET = "feature_budget_spent"  # the views not read because the budget ran out
# After a failed read, lookups answer the fallback without touching the store for this
# long, then one tries again: a paused Redis costs one budget a second, not one a request.
BREAKER_SECONDS = 1.0
MEAN_30D = "customer_mean_amount_30d"  # the request-time ratio needs it


@dataclass(frozen=True)
class FeatureVector:
    values: dict[str, float]
    fallback: list[str]  # features missing or stale, or STORE_ERROR / OVER_BUDGET
    # Per snapshot view read, the age of its row at the payment in seconds (since its
    # midnight); None: no row. Velocity views' age is the stream's lag (the service's).
    ages: dict[str, float | None] = field(default_factory=dict)

    def row(self, names: list[str]) -> np.ndarray:
        return np.fromiter((self.values[n] for n in names), dtype=np.float64, count=len(names))


class OnlineFeatures:
    """Looks up the entity features named by `refs` ("view:feature") for one payment."""

    def __init__(
        self,
        store: FeatureStore,
        refs: list[str],
        fill_missing_with: float | None = None,
        budget_seconds: float = 0.02,
        pending: Callable[[str, int], PaymentState | None] | None = None,
    ) -> None:
        self.store = store
        # Payments this process has sent to the state and a read may not show yet
        # (serving/velocity_updates.py): merged into the state before it is used.
        self.pending = pending
        self.budget_seconds = budget_seconds
        self._skip_store_until = 0.0  # the breaker: monotonic time it closes again
        self.fill_missing_with = fill_missing_with
        self.refs = refs
        self.names = [ref.split(":", 1)[1] for ref in refs]
        self.ttl_seconds = SNAPSHOT_TTL.total_seconds()
        # Read through Feast's own store calls minus get_online_features' response
        # assembly (the two are timed side by side by benchmarks/online_lookup.py): the
        # provider's `online_read` per view, or on Redis one pipeline for all views.
        self._provider = store._get_provider()
        _bound_redis(self._provider.online_store, store.config.online_store, budget_seconds)
        self._views: list[tuple[FeatureView, str, list[str]]] = []
        # Velocity features are not stored: entity kind -> the names computed from its
        # payment-state view, which is read in their place.
        self._velocity: dict[str, list[str]] = {}
        by_view: dict[str, list[str]] = {}
        for ref in refs:
            view_name, name = ref.split(":", 1)
            if view_name in VELOCITY_VIEWS:
                self._velocity.setdefault(VELOCITY_VIEWS[view_name], []).append(name)
            else:
                by_view.setdefault(view_name, []).append(name)
        for kind in self._velocity:
            by_view[STATE_VIEWS[kind]] = list(STATE_FIELDS)
        self._state_kinds = {view: kind for kind, view in STATE_VIEWS.items()}
        self.velocity_views = sorted(
            view for view, kind in VELOCITY_VIEWS.items() if kind in self._velocity
        )
        for view_name, names in by_view.items():
            view = store.get_feature_view(view_name)
            join_key = store.get_entity(view.entities[0]).join_key
            self._views.append((view, join_key, names))
        self._batched = _batched_redis_read(self._provider.online_store, store.config, self._views)

    def lookup(
        self, customer_id: int, terminal_id: int, amount: float, event_time: datetime
    ) -> FeatureVector:
        values, fallback, ages = self._entity_values(customer_id, terminal_id, event_time)
        if self.fill_missing_with is not None:  # the deliberate defect, see settings
            values = {
                name: self.fill_missing_with if np.isnan(value) else value
                for name, value in values.items()
            }
        computed = request_features(
            np.array([amount]),
            np.array([int(event_time.timestamp())]),
            np.array([values.get(MEAN_30D, np.nan)]),
        )
        values.update({name: float(column[0]) for name, column in computed.items()})
        return FeatureVector(values, fallback, ages)

    def _entity_values(
        self, customer_id: int, terminal_id: int, event_time: datetime
    ) -> tuple[dict[str, float], list[str], dict[str, float | None]]:
        if time.monotonic() < self._skip_store_until:  # the store failed a moment ago
            return dict.fromkeys(self.names, np.nan), [STORE_ERROR], {}
        ids = {"customer_id": customer_id, "terminal_id": terminal_id}
        at = event_time.timestamp()
        oldest_fresh = at - self.ttl_seconds
        values: dict[str, float] = {}
        fallback: list[str] = []
        ages: dict[str, float | None] = {}
        # This process's unwritten payments, taken before the store is read: a batch
        # that lands in between is then in the read, or still here (merged once either
        # way); taken after, a batch landing between the two would be in neither.
        unwritten = {
            kind: self.pending(kind, ids[f"{kind}_id"]) if self.pending else None
            for kind in self._velocity
        }
        try:
            rows = self._batched(ids) if self._batched else self._read_each(ids)
        except Exception as exc:  # any store failure degrades to an explicit fallback
            log.warning(
                "feature store lookup failed (%r); skipping it for %g s", exc, BREAKER_SECONDS
            )
            self._skip_store_until = time.monotonic() + BREAKER_SECONDS
            return dict.fromkeys(self.names, np.nan), [STORE_ERROR], {}
        for (view, _, names), read in zip(self._views, rows, strict=True):
            kind = self._state_kinds.get(view.name)
            wanted = self._velocity[kind] if kind else names
            if read is None:  # a slow store: the views past the budget are a fallback
                values.update(dict.fromkeys(wanted, np.nan))
                fallback += [*wanted] if OVER_BUDGET in fallback else [OVER_BUDGET, *wanted]
                continue
            stamp, row = read
            if stamp is not None and stamp.timestamp() == 0:
                # Feast's Redis store reads a key it does not have as a row stamped 1970
                # with every value unset; SQLite's as no row. No row, as on SQLite: its age
                # is unknown (None), not 56 years.
                stamp, row = None, None
            if kind is not None:  # no row is a customer or terminal with no payment yet
                state = state_of_row(row)
                if (extra := unwritten[kind]) is not None:
                    state = state.merged(extra, kind)
                computed = VELOCITY_OF[kind](state, micros(event_time))
                values.update({name: computed[name] for name in wanted})
                continue
            ages[view.name] = None if stamp is None else at - stamp.timestamp()
            fresh = stamp is not None and stamp.timestamp() >= oldest_fresh
            for name in names:
                if not fresh:  # entity unknown, or its snapshot is older than the TTL
                    values[name] = np.nan
                    fallback.append(name)
                else:  # a present snapshot may hold a by-design missing value (mean of 0 rows)
                    values[name] = _number(row.get(name) if row else None)
        return values, fallback, ages

    def _read_each(self, ids: dict[str, int]) -> list[Row | None]:
        """One `online_read` per view (SQLite: in this process, no round trip); the views
        not read before the budget is spent are None."""
        deadline = time.perf_counter() + self.budget_seconds
        rows: list[Row | None] = []
        for view, join_key, names in self._views:
            if time.perf_counter() > deadline:
                rows.append(None)
                continue
            key = EntityKey(join_keys=[join_key], entity_values=[Value(int64_val=ids[join_key])])
            ((stamp, row),) = self._provider.online_read(
                config=self.store.config,
                table=view,
                entity_keys=[key],
                # A copy: Feast's Redis store appends its `_ts:<view>` field to the
                # list it is given, which grew every later lookup by one field.
                requested_features=list(names),
            )
            rows.append((stamp, row))
        return rows

    def ping(self) -> bool:
        """Does the store answer at all? (readiness)"""
        try:
            self.store.get_online_features(
                features=self.refs[:1], entity_rows=[{"customer_id": 0, "terminal_id": 0}]
            )
            return True
        except Exception:
            return False


def _batched_redis_read(
    online_store: object, config: RepoConfig, views: list[tuple[FeatureView, str, list[str]]]
) -> Callable[[dict[str, int]], list[Row | None]] | None:
    """On Redis, every view of a payment in one round trip: one pipeline of one HMGET
    per view, as Feast's own `get_online_features` batches them (its RedisOnlineStore's
    key, field and decoding helpers, the ones its `online_read` calls), instead of one
    round trip per view. The socket timeout (`_bound_redis`) is the budget. None for
    any other store."""
    from feast.infra.online_stores.redis import RedisOnlineStore, _versioned_fv_name

    if not isinstance(online_store, RedisOnlineStore):
        return None
    store = online_store
    plans = []
    for view, join_key, names in views:
        name = _versioned_fv_name(view, config)
        # Feast appends the view's `_ts:<view>` field to both lists: copies, made once.
        fields, hset_keys = store._generate_hset_keys_for_features(view, list(names), name)
        plans.append((join_key, name, fields, hset_keys))

    def read(ids: dict[str, int]) -> list[Row | None]:
        keys = {
            join_key: store._generate_redis_keys_for_entities(
                config, [EntityKey(join_keys=[join_key], entity_values=[Value(int64_val=value)])]
            )[0]
            for join_key, value in ids.items()
        }
        replies = store._read_hash_fields(
            config, [(keys[join_key], hset_keys) for join_key, _, _, hset_keys in plans]
        )
        return [
            store._get_features_for_entity(reply, name, fields)
            for (_, name, fields, _), reply in zip(plans, replies, strict=True)
        ]

    return read


def _bound_redis(online_store: object, config: object, budget_seconds: float) -> None:
    """Bound every Redis call of this client by the budget. redis-py has no socket or
    connect timeout by default (a paused or black-holed Redis blocks a lookup forever)
    and retries a failed command 3 times with 1-10 s backoff. Now: one immediate retry
    on a refused or reset connection (a restarted server closed it), none on a timeout,
    then the explicit fallback. Only serving's client: a bulk materialize keeps its own."""
    if getattr(config, "type", None) != "redis":
        return
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.retry import Retry

    client = online_store._get_client(config)  # type: ignore[attr-defined]
    pool = client.connection_pool
    pool.connection_kwargs.update(
        socket_timeout=budget_seconds,
        socket_connect_timeout=budget_seconds,
        retry_on_timeout=False,
    )
    pool.disconnect()  # connections made before this pick the timeouts up on reconnect
    client.set_retry(Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)))


def _number(value: Value | None) -> float:
    """A Feast Value proto as a float; an unset value is missing (NaN), not zero."""
    if value is None:
        return np.nan
    kind = value.WhichOneof("val")
    return np.nan if kind is None or kind == "null_val" else float(getattr(value, kind))
