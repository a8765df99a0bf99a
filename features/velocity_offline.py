"""The velocity features offline: one row per payment, computed by DuckDB window frames
over the raw transactions, and the daily payment-state snapshots that seed the online
store. Definitions are features/velocity.py's; tests/features/test_velocity.py holds
this SQL to them row by row.

Each frame is `RANGE BETWEEN <width> PRECEDING AND 1 PRECEDING` over integer
microseconds: payments at an earlier instant within the window, the payment itself and
its same-instant twins excluded, exactly the strict "before" of the definitions.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from features.velocity import (
    CUSTOMER_VELOCITY_FEATURES,
    CUSTOMER_WINDOWS,
    DAY_US,
    PACKED,
    STATE_MAX_PAYMENTS,
    STATE_RETENTION_US,
    TERMINAL_VELOCITY_FEATURES,
    TERMINAL_WINDOWS,
)

_PAYMENTS = """
    SELECT transaction_id, customer_id, terminal_id, amount, event_timestamp,
           epoch_us(event_timestamp) AS us
    FROM tx
"""


def _frame(key: str, width_us: int) -> str:
    return f"(PARTITION BY {key} ORDER BY us RANGE BETWEEN {width_us} PRECEDING AND 1 PRECEDING)"


def _connect(tx: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    connection.register(
        "tx", tx[["transaction_id", "customer_id", "terminal_id", "amount", "event_timestamp"]]
    )
    return connection


def _stamped(frame: pd.DataFrame) -> pd.DataFrame:
    """Microsecond UTC stamps, as the other feature tables have."""
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).dt.as_unit("us")
    return frame


def customer_velocity_table(tx: pd.DataFrame) -> pd.DataFrame:
    """customer_id, event_timestamp (the payment's), transaction_id and the customer's
    velocity features just before each payment."""
    columns = []
    for name, width in CUSTOMER_WINDOWS.items():
        w = _frame("customer_id", width)
        columns += [
            f"count(*) OVER {w} AS customer_payments_{name}",
            f"coalesce(sum(amount) OVER {w}, 0.0) AS customer_amount_sum_{name}",
            f"avg(amount) OVER {w} AS customer_amount_mean_{name}",
            f"max(amount) OVER {w} AS customer_amount_max_{name}",
        ]
    day = _frame("customer_id", DAY_US)
    columns.append(f"(us - max(us) OVER {day}) / 1e6 AS customer_seconds_since_previous")
    # Distinct terminals among the day's earlier payments: count each terminal at its
    # first payment of the day, then sum those marks over the earlier payments.
    today = (
        f"(PARTITION BY customer_id, us // {DAY_US} ORDER BY us "
        "RANGE BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)"
    )
    query = f"""
        WITH payments AS ({_PAYMENTS}),
        marked AS (
            SELECT *, (row_number() OVER (PARTITION BY customer_id, us // {DAY_US}, terminal_id
                                           ORDER BY us, transaction_id) = 1)::INT AS first_here
            FROM payments
        )
        SELECT transaction_id, customer_id, event_timestamp, {", ".join(columns)},
               coalesce(sum(first_here) OVER {today}, 0) AS customer_terminals_today
        FROM marked
        ORDER BY us, transaction_id
    """
    frame = _connect(tx).sql(query).df()
    for name in CUSTOMER_VELOCITY_FEATURES:
        frame[name] = frame[name].astype(
            "int64" if "_payments_" in name or name.endswith("_today") else "float64"
        )
    return _stamped(frame)


def terminal_velocity_table(tx: pd.DataFrame) -> pd.DataFrame:
    """terminal_id, event_timestamp, transaction_id and the terminal's velocity features."""
    columns = [
        f"count(*) OVER {_frame('terminal_id', width)} AS terminal_payments_{name}"
        for name, width in TERMINAL_WINDOWS.items()
    ]
    query = f"""
        WITH payments AS ({_PAYMENTS})
        SELECT transaction_id, terminal_id, event_timestamp, {", ".join(columns)}
        FROM payments ORDER BY us, transaction_id
    """
    frame = _connect(tx).sql(query).df()
    for name in TERMINAL_VELOCITY_FEATURES:
        frame[name] = frame[name].astype("int64")
    return _stamped(frame)


def payment_state_table(
    tx: pd.DataFrame, kind: str, day0: pd.Timestamp, n_days: int
) -> pd.DataFrame:
    """The entity's payment state at each midnight after a day it paid on: its payments
    of the retention before that midnight, newest `STATE_MAX_PAYMENTS`, packed. What
    materialization copies into the online store; serving's updates carry it on."""
    key = f"{kind}_id"
    retention = STATE_RETENTION_US[kind]
    day0_us = int(pd.Timestamp(day0).value // 1_000)
    query = f"""
        WITH payments AS ({_PAYMENTS}),
        snapshots AS (
            SELECT DISTINCT {key},
                   {day0_us} + ((us - {day0_us}) // {DAY_US} + 1) * {DAY_US} AS at_us
            FROM payments
        ),
        held AS (
            SELECT s.{key}, s.at_us, p.transaction_id, p.us, p.amount, p.terminal_id AS p_terminal,
                   row_number() OVER (PARTITION BY s.{key}, s.at_us
                                      ORDER BY p.us DESC, p.transaction_id DESC) AS newest
            FROM snapshots s JOIN payments p
              ON p.{key} = s.{key} AND p.us < s.at_us AND p.us >= s.at_us - {retention}
        )
        SELECT {key}, make_timestamp(at_us) AS event_timestamp, transaction_id, us, amount,
               p_terminal
        FROM held WHERE newest <= {STATE_MAX_PAYMENTS} AND at_us <= {day0_us + n_days * DAY_US}
        ORDER BY at_us, {key}, us, transaction_id
    """
    held = _connect(tx).sql(query).df()
    # One packed record per payment held, then one bytes value per (entity, midnight):
    # records are in group order, so each group is a contiguous slice of the buffer.
    records = np.empty(len(held), dtype=PACKED)
    records["id"], records["time_us"] = held["transaction_id"], held["us"]
    records["amount"], records["terminal"] = held["amount"], held["p_terminal"]
    buffer = records.tobytes()
    group = held[key].ne(held[key].shift()) | held["event_timestamp"].ne(
        held["event_timestamp"].shift()
    )
    starts = np.flatnonzero(group.to_numpy())
    ends = np.append(starts[1:], len(held)) * PACKED.itemsize
    frame = held.iloc[starts][[key, "event_timestamp"]].reset_index(drop=True)
    frame["payments"] = [buffer[a:b] for a, b in zip(starts * PACKED.itemsize, ends, strict=True)]
    return _stamped(frame)
