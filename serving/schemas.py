"""Request and response bodies of the scoring API: the edge where payments enter."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from data.schema import MAX_AMOUNT
from serving.routing import Breaker

# Strict: JSON `true` is not customer 1. At most 2**53 - 1, the largest integer that
# every JSON parser keeps exact (Feast's join keys are int64, so they fit).
EntityId = Annotated[int, Field(ge=0, le=2**53 - 1, strict=True)]
MIN_AMOUNT = 0.01  # one cent: a smaller positive number is not a payment
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)

Decision = Literal["approve", "review", "decline"]
Route = Literal["champion", "canary"]


def _text_not_number(value: object) -> object:
    # A bare number would be guessed as seconds or milliseconds since the epoch.
    if isinstance(value, int | float):
        raise ValueError("must be ISO 8601 text with a time zone, not a number")
    return value


def _plausible_time(value: datetime) -> datetime:
    if not EARLIEST <= value < LATEST:
        raise ValueError("must be between 2000-01-01 and 2100-01-01")
    return value.astimezone(UTC)


class ScoreRequest(BaseModel):
    """One card payment to score. Unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    transaction_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")
    customer_id: EntityId
    terminal_id: EntityId
    amount: float = Field(ge=MIN_AMOUNT, lt=MAX_AMOUNT, allow_inf_nan=False)
    timestamp: AwareDatetime

    @field_validator("amount", mode="before")
    @classmethod
    def _number_not_boolean(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("amount must be a number, not true or false")
        return value

    _text = field_validator("timestamp", mode="before")(_text_not_number)
    _plausible = field_validator("timestamp")(_plausible_time)


class ModelRef(BaseModel):
    name: str
    version: str
    alias: str


class ScoreResponse(BaseModel):
    request_id: str
    transaction_id: str
    score: float = Field(ge=0, le=1)
    decision: Decision
    model: ModelRef
    route: Route
    fallback: bool = Field(description="True when any feature was missing or stale")
    fallback_features: list[str] = Field(default_factory=list)


class FieldProblem(BaseModel):
    field: str
    message: str


class ValidationErrorBody(BaseModel):
    detail: list[FieldProblem]


class RoutingUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # `0.0` is not `false`

    canary_share: float | None = Field(None, ge=0.0, le=1.0)
    shadow: bool | None = None
    breaker: Breaker | None = Field(
        None, description="review_instead_of_decline: no payment is declined outright"
    )


class RoutingState(BaseModel):
    canary_share: float
    shadow: bool
    breaker: Breaker


class ClockUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    now: AwareDatetime = Field(description="the simulated instant to hold the clock at")

    _text = field_validator("now", mode="before")(_text_not_number)
    _plausible = field_validator("now")(_plausible_time)


class ClockState(BaseModel):
    now: datetime
    held: bool = Field(description="false: the wall clock")
    max_lead_seconds: float
    max_lateness_seconds: float


class ReloadResult(BaseModel):
    loaded: dict[str, str | None]
    errors: dict[str, str]
