"""Request-time features: computed from the payment itself, by this one function,
offline (whole columns, in training) and online (one-element arrays, in serving).

Two copies of this logic would be the classic source of training/serving skew, so
there is exactly one, and it works on NumPy arrays so serving needs no pandas.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

REQUEST_FEATURES = [
    "amount",
    "log_amount",
    "hour_of_day",
    "is_weekend",
    "is_night",
    "amount_to_customer_mean_30d",
]
NIGHT_HOURS = (22, 6)  # payments from 22:00 to 05:59 UTC count as night
_SECONDS_PER_DAY = 86_400
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)

FloatArray = npt.NDArray[np.float64]


def request_features(
    amount: npt.ArrayLike,
    event_epoch_seconds: npt.ArrayLike,
    customer_mean_amount_30d: npt.ArrayLike | None = None,
) -> dict[str, FloatArray]:
    """Features of a payment at request time.

    `event_epoch_seconds` is UTC seconds since the epoch. `customer_mean_amount_30d` is
    the entity feature of the same name; missing (NaN) stays missing in the ratio.
    """
    amount = np.asarray(amount, dtype=np.float64)
    seconds = np.asarray(event_epoch_seconds, dtype=np.int64)
    if customer_mean_amount_30d is None:
        customer_mean = np.full(amount.shape, np.nan)
    else:
        customer_mean = np.asarray(customer_mean_amount_30d, dtype=np.float64)
    hour = (seconds % _SECONDS_PER_DAY) // 3600
    weekday = (seconds // _SECONDS_PER_DAY + _EPOCH_WEEKDAY) % 7
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(customer_mean > 0, amount / customer_mean, np.nan)
    return {
        "amount": amount,
        "log_amount": np.log1p(amount),
        "hour_of_day": hour.astype(np.float64),
        "is_weekend": (weekday >= 5).astype(np.float64),
        "is_night": ((hour >= NIGHT_HOURS[0]) | (hour < NIGHT_HOURS[1])).astype(np.float64),
        "amount_to_customer_mean_30d": ratio,
    }
