"""Online features for one payment: one Feast call for the entity features, then the
shared request-time function (features/transforms.py), the very code training used.

Missing, stale or unreachable features become NaN with an explicit, counted fallback
flag naming them, never a silent zero: the models were trained with NaN for missing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from features.repo.definitions import SNAPSHOT_TTL
from features.transforms import request_features

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)
STORE_ERROR = "feature_store_unavailable"
MEAN_30D = "customer_mean_amount_30d"  # the request-time ratio needs it


@dataclass(frozen=True)
class FeatureVector:
    values: dict[str, float]
    fallback: list[str]  # features that were missing or stale (or STORE_ERROR)

    def row(self, names: list[str]) -> np.ndarray:
        return np.fromiter((self.values[n] for n in names), dtype=np.float64, count=len(names))


class OnlineFeatures:
    """Looks up the entity features named by `refs` ("view:feature") for one payment."""

    def __init__(self, store: FeatureStore, refs: list[str]) -> None:
        self.store = store
        self.refs = refs
        self.names = [ref.split(":", 1)[1] for ref in refs]
        self.ttl_seconds = SNAPSHOT_TTL.total_seconds()

    def lookup(
        self, customer_id: int, terminal_id: int, amount: float, event_time: datetime
    ) -> FeatureVector:
        values, fallback = self._entity_values(customer_id, terminal_id, event_time)
        computed = request_features(
            np.array([amount]),
            np.array([int(event_time.timestamp())]),
            np.array([values.get(MEAN_30D, np.nan)]),
        )
        values.update({name: float(column[0]) for name, column in computed.items()})
        return FeatureVector(values, fallback)

    def _entity_values(
        self, customer_id: int, terminal_id: int, event_time: datetime
    ) -> tuple[dict[str, float], list[str]]:
        try:
            response = self.store.get_online_features(
                features=self.refs,
                entity_rows=[{"customer_id": customer_id, "terminal_id": terminal_id}],
            ).to_dict(include_event_timestamps=True)
        except Exception as exc:  # any store failure degrades to an explicit fallback
            log.warning("feature store lookup failed: %s", exc)
            return dict.fromkeys(self.names, np.nan), [STORE_ERROR]
        oldest_fresh = event_time.timestamp() - self.ttl_seconds
        values: dict[str, float] = {}
        fallback: list[str] = []
        for name in self.names:
            value, stamp = response[name][0], _seconds(response[f"{name}__ts"][0])
            if stamp <= 0 or stamp < oldest_fresh:  # entity unknown, or snapshot too old
                values[name] = np.nan
                fallback.append(name)
            else:  # a present snapshot may still hold a by-design missing value (a mean of 0 rows)
                values[name] = np.nan if value is None else float(value)
        return values, fallback

    def ping(self) -> bool:
        """Does the store answer at all? (readiness)"""
        try:
            self.store.get_online_features(
                features=self.refs[:1], entity_rows=[{"customer_id": 0, "terminal_id": 0}]
            )
            return True
        except Exception:
            return False


def _seconds(stamp: object) -> float:
    """Feast returns event timestamps as datetimes, or 0 when the entity is absent."""
    if isinstance(stamp, datetime):
        return stamp.timestamp()
    return float(stamp or 0)
