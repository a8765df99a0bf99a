"""How each scored payment reaches its customer's and terminal's payment state: applied
in-process before the answer (`inline`, the embedded default), or appended to a Redis
stream that `fraudlab stream worker` applies (`stream`, the production default).

Either way the update can never fail or change an answer: a failure is counted
(`fraudlab_payment_updates{outcome="failed"}`) and logged, and the payment is scored
as it would have been. What it costs is the state's freshness, which /metrics shows.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from fraudlab.settings import Settings
from serving.payment_stream import StreamLag, StreamPublisher, all_streams, stream_lag
from serving.velocity_state import PaymentEvent, PaymentStates

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)


class PaymentUpdates(Protocol):
    mode: str

    def publish(self, event: PaymentEvent) -> str:
        """Deliver one event; returns the outcome to count."""
        ...

    def lag(self) -> StreamLag: ...

    def close(self) -> None: ...


class InlineUpdates:
    """Merge and write in this process: the next request reads the new state."""

    mode = "inline"

    def __init__(self, store: FeatureStore) -> None:
        self.states = PaymentStates(store)

    def publish(self, event: PaymentEvent) -> str:
        return "applied" if self.states.apply([event]) else "unchanged"

    def lag(self) -> StreamLag:
        return StreamLag(0.0, 0)  # applied before the answer: never behind

    def close(self) -> None:
        pass


class StreamUpdates:
    """Queue for the payment stream; the worker applies it a moment later."""

    mode = "stream"

    def __init__(self, settings: Settings, timeout_seconds: float) -> None:
        self.publisher = StreamPublisher(settings, timeout_seconds)
        self.streams = all_streams(settings)

    def publish(self, event: PaymentEvent) -> str:
        return "queued" if self.publisher.publish(event) else "dropped"

    def lag(self) -> StreamLag:
        """Redis's view, plus what this process has not sent yet."""
        behind = stream_lag(self.publisher.client, self.streams)
        return StreamLag(behind.seconds, behind.pending_events + self.publisher.backlog())

    def close(self) -> None:
        self.publisher.close()


def payment_updates(settings: Settings, store: FeatureStore) -> PaymentUpdates:
    if settings.payment_updates == "stream":
        return StreamUpdates(settings, settings.serving.online_budget_ms / 1e3)
    return InlineUpdates(store)
