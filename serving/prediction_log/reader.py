"""Reading the log: a window of event time as a frame with one column per feature, the
shadow scores of some requests, and the few counts and timings the monitor, the
scenario runner, the benchmarks and the tests need."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraudlab.errors import MissingInput
from serving.prediction_log.record import COLUMNS, PREDICTIONS, SHADOW_SCORES, connect

STAGES = ("features_ms", "model_ms", "total_ms")
AGE_PREFIX = "age__"  # read_predictions' column per view: `age__<view>`, in seconds
_IN_WINDOW = "event_timestamp >= ? AND event_timestamp < ?"  # ? = _bounds(since, until)


def _existing(path: Path) -> Path:
    if not path.exists():
        raise MissingInput(f"no prediction log at {path}: serve some traffic first")
    return path


def _bounds(since: pd.Timestamp, until: pd.Timestamp) -> tuple[str, str]:
    return since.isoformat(), until.isoformat()


def read_predictions(
    path: Path,
    since: pd.Timestamp,
    until: pd.Timestamp,
    *,
    with_features: bool = True,
    newest: int | None = None,
) -> pd.DataFrame:
    """Answered requests with event time in [since, until), one row each; with the
    logged feature vector expanded into one float column per feature (NaN = missing at
    serving time) unless `with_features` is False (label jobs need none of it).

    Each view's logged feature age is a column `age__<view>` (seconds; NaN: not read).
    The request's own amount is `request_amount`, so that the column `amount` is the
    feature serving computed and scored (they differ when serving converts it wrongly).
    `newest`: only the window's latest this many answers (in time order), e.g. the
    guardrail's cap at high traffic.
    """
    names = [c for c in COLUMNS if with_features or c not in ("features", "feature_age")]
    latest = "" if newest is None else f" ORDER BY event_timestamp DESC LIMIT {int(newest)}"
    with connect(_existing(path)) as conn:
        rows = conn.execute(
            f"SELECT {', '.join(names)} FROM {PREDICTIONS} WHERE {_IN_WINDOW}{latest}",
            _bounds(since, until),
        ).fetchall()
    if newest is not None:
        rows.reverse()
    # Built column by column from the schema's types, not through pandas' SQL reader and
    # a frame per JSON column: the minute jobs read a dozen rows every few minutes, and
    # those ways cost several times the query itself.
    table = np.array(rows, dtype=object).reshape(len(rows), len(names))
    values = {name: table[:, i] for i, name in enumerate(names)}
    features, ages = values.pop("features", None), values.pop("feature_age", None)
    columns = {
        _RENAMED.get(name, name): _typed(column, COLUMNS[name]) for name, column in values.items()
    }
    columns["event_timestamp"] = pd.to_datetime(
        columns["event_timestamp"], utc=True, format="ISO8601"
    ).as_unit("us")
    if features is not None and ages is not None and rows:
        columns |= _json_columns(features, "") | _json_columns(ages, AGE_PREFIX)
    return pd.DataFrame(columns)


_RENAMED = {"amount": "request_amount"}  # `amount` is the feature serving computed


def _typed(column: np.ndarray, declared: str) -> np.ndarray:
    """A log column (objects) as pandas' SQL reader would type it: REAL as float (NULL:
    NaN), a NOT NULL INTEGER as int64, anything else as objects (NULL: None)."""
    if not len(column):
        return column
    if declared.startswith("REAL"):
        return column.astype(np.float64)
    if declared.startswith("INTEGER NOT NULL"):
        return column.astype(np.int64)
    return column


def _json_columns(texts: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
    """One float column per key of the JSON objects (in order of first appearance; a
    key absent from a row, or null, is NaN). Rows logged by one version share their
    keys and order, so one matrix holds them; otherwise, key by key."""
    parsed = [json.loads(text) for text in texts]
    keys = list(parsed[0]) if parsed else []
    if all(list(row) == keys for row in parsed):
        matrix = np.array([list(row.values()) for row in parsed], dtype=np.float64)
        return {prefix + key: matrix[:, i] for i, key in enumerate(keys)}
    keys = list(dict.fromkeys(key for row in parsed for key in row))
    return {
        prefix + key: np.array([row.get(key) for row in parsed], dtype=np.float64) for key in keys
    }


def table_ids(transaction_ids: pd.Series) -> pd.Series:
    """The transactions table's id (int64, data/schema.py) of each logged transaction id:
    the log keeps what the caller sent, as text; one that is not a number matches no row.
    Converting the log's few ids is cheaper than the table's many to text."""
    return pd.to_numeric(transaction_ids, errors="coerce").astype("Int64")


def read_shadow_scores(path: Path, request_ids: Iterable[str]) -> pd.DataFrame:
    """Shadow (challenger) scores logged for the given requests."""
    with connect(_existing(path)) as conn:
        conn.execute("CREATE TEMP TABLE wanted (request_id TEXT PRIMARY KEY)")
        conn.executemany("INSERT OR IGNORE INTO wanted VALUES (?)", ((r,) for r in request_ids))
        return pd.read_sql_query(
            f"SELECT s.* FROM {SHADOW_SCORES} AS s JOIN wanted USING (request_id)", conn
        )


def read_trial(
    path: Path, challenger_version: str, since: pd.Timestamp, until: pd.Timestamp
) -> pd.DataFrame:
    """Every answer of [since, until) while `challenger_version` was challenger, with its
    shadow score, decision and error beside the champion-routed ones (one indexed query:
    the guardrail reads this every few minutes while a canary runs)."""
    with connect(_existing(path)) as conn:
        return pd.read_sql_query(
            f"SELECT p.customer_id, p.route, p.score, p.model_decision, s.score AS shadow_score,"
            f" s.decision AS shadow_decision, s.error AS shadow_error"
            f" FROM {PREDICTIONS} AS p LEFT JOIN {SHADOW_SCORES} AS s"
            f" ON s.request_id = p.request_id AND s.model_version = p.challenger_version"
            f" WHERE p.{_IN_WINDOW} AND p.challenger_version = ?",
            conn,
            params=(*_bounds(since, until), challenger_version),
        )


def latest_service_time(path: Path) -> pd.Timestamp | None:
    """The service clock's latest "now" logged (served_at), or None for an empty log.
    Not the largest payment timestamp: that is the caller's word, and one payment
    stamped 2099 would move every later monitor run's window there."""
    with connect(_existing(path)) as conn:
        (latest,) = conn.execute(f"SELECT MAX(served_at) FROM {PREDICTIONS}").fetchone()
    return None if latest is None else pd.Timestamp(latest)


def count_rows(path: Path, table: str = PREDICTIONS) -> int:
    with connect(_existing(path)) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def count_between(path: Path, since: pd.Timestamp, until: pd.Timestamp) -> int:
    """Requests logged with event time in [since, until)."""
    with connect(_existing(path)) as conn:
        query = f"SELECT COUNT(*) FROM {PREDICTIONS} WHERE {_IN_WINDOW}"
        return int(conn.execute(query, _bounds(since, until)).fetchone()[0])


def rows_for_requests(path: Path, table: str, request_ids: list[str]) -> list[dict[str, Any]]:
    """The rows of `table` (predictions or shadow_scores) for these request ids."""
    marks = ",".join("?" * len(request_ids))
    with connect(_existing(path)) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            f"SELECT * FROM {table} WHERE request_id IN ({marks})", request_ids
        ).fetchall()
    return [dict(row) for row in rows]


def stage_latency(
    path: Path,
    *,
    since: pd.Timestamp | None = None,
    until: pd.Timestamp | None = None,
    transaction_prefix: str | None = None,
) -> pd.DataFrame:
    """The server's own time per request, stage by stage (features, model, total, in
    ms), for requests with event time in [since, until) or whose transaction id starts
    with `transaction_prefix`: what the service measured, free of any client's queueing."""
    where, params = [], []
    if since is not None:
        where.append("event_timestamp >= ?")
        params.append(since.isoformat())
    if until is not None:
        where.append("event_timestamp < ?")
        params.append(until.isoformat())
    if transaction_prefix is not None:
        where.append("transaction_id LIKE ?")
        params.append(transaction_prefix.replace("%", "") + "%")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    with connect(_existing(path)) as conn:
        return pd.read_sql_query(
            f"SELECT {', '.join(STAGES)} FROM {PREDICTIONS}{clause}", conn, params=params
        )
