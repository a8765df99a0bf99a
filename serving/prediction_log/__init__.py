"""The prediction log: every answered request with its feature vector, and every shadow
score; the contract between serving (which writes it) and monitoring (which reads it).

This package is the one owner of the log: its records (record.py), the writer the API
runs (writer.py) and the readers monitoring, scenarios, benchmarks and tests use
(reader.py). Nothing outside it writes SQL against the log's tables.
"""

from serving.prediction_log.reader import (
    count_between,
    count_rows,
    latest_service_time,
    read_predictions,
    read_shadow_scores,
    read_trial,
    rows_for_requests,
    stage_latency,
    table_ids,
)
from serving.prediction_log.record import (
    COLUMNS,
    PredictionRecord,
    ShadowRecord,
    create_log,
)
from serving.prediction_log.writer import PredictionLog, write_records

__all__ = [
    "COLUMNS",
    "PredictionLog",
    "PredictionRecord",
    "ShadowRecord",
    "count_between",
    "count_rows",
    "create_log",
    "latest_service_time",
    "read_predictions",
    "read_shadow_scores",
    "read_trial",
    "rows_for_requests",
    "stage_latency",
    "table_ids",
    "write_records",
]
