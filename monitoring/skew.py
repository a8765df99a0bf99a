"""Skew: did serving compute each feature the way training does?

The direct detector of training/serving skew. For a sample of logged requests, every
feature is recomputed offline, at the request's own timestamp, the way the training
set computes it: entity features by Feast's point-in-time join over the feature
tables, request-time features by the one shared function (features/transforms.py)
from the request's raw amount and timestamp. Then each logged value is compared with
its own recomputation, feature by feature.

Each feature is judged on its own, so a fault flags the feature serving computed
differently, plus the features serving derived from that wrong value (e.g. a unit
change upstream of the shared function also moves `log_amount` and the ratio to the
customer's mean) and nothing else. Drift cannot tell these apart from a real change in
the world; skew can, because both sides saw the same payment at the same instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.store import feature_service, historical_features
from monitoring.drift import logged_values
from monitoring.findings import Finding
from monitoring.policy import SkewConfig
from pipelines.training_set import with_request_features

if TYPE_CHECKING:
    from feast import FeatureStore

ENTITY_KEYS = ["customer_id", "terminal_id", "event_timestamp"]
MAX_EXAMPLES = 3  # enough to show the pattern (x100, 0 instead of missing) to a person


def run_skew(
    store: FeatureStore,
    predictions: pd.DataFrame,
    features: list[str],
    out_dir: Path,
    config: SkewConfig,
    *,
    service_name: str,
    sample_rows: int = 2000,
    seed: int = 0,
) -> Finding:
    """Per-feature mismatch between what serving logged and the offline recomputation.

    A value mismatches when only one side is missing, or when |served - offline| >
    tolerance * max(1, |offline|) (relative, with an absolute floor near zero); a feature
    is skewed when it mismatches on more than `feature_mismatch_above` of the sample.
    Writes `skew.json`.
    """
    tolerance, mismatch_alert = config.tolerance, config.feature_mismatch_above
    if len(predictions) == 0:
        return Finding(
            job="skew", status="insufficient_data", summary="no requests in the window"
        ).saved(out_dir)
    sample = predictions.sample(n=min(sample_rows, len(predictions)), random_state=seed)
    sample = sample.reset_index(drop=True)
    served = logged_values(sample, features)
    offline = recompute_offline(store, sample, service_name)[features]
    table = [
        compare_values(name, sample["request_id"], served[name], offline[name], tolerance)
        for name in features
    ]
    table.sort(key=lambda row: (-row["mismatch_rate"], row["feature"]))
    skewed = [row["feature"] for row in table if row["mismatch_rate"] > mismatch_alert]
    worst: dict[str, Any] = table[0] if table else {"feature": "-", "mismatch_rate": 0.0}
    summary = (
        f"{len(skewed)} of {len(features)} features differ from their offline value on more "
        f"than {mismatch_alert:.0%} of {len(sample):,} sampled requests"
        + (f": {', '.join(skewed)}" if skewed else "")
        + f" (worst {worst['feature']}: {worst['mismatch_rate']:.1%})"
    )
    finding = Finding(
        job="skew",
        status="ok",
        summary=summary,
        metrics={
            "max_mismatch_rate": float(worst["mismatch_rate"]),
            "skewed_feature_count": float(len(skewed)),
        },
        details={
            "skewed_features": skewed,
            "sampled_rows": len(sample),
            "window_rows": len(predictions),
            "seed": seed,
            "tolerance": tolerance,
            "mismatch_alert": mismatch_alert,
            "feature_service": service_name,
            "features": table,
        },
    )
    return finding.saved(out_dir)


def recompute_offline(
    store: FeatureStore, requests: pd.DataFrame, service_name: str
) -> pd.DataFrame:
    """The features training would have computed for these requests, row for row."""
    # Microseconds: the unit with_request_features expects (the training frame's unit).
    timestamps = pd.to_datetime(requests["event_timestamp"], utc=True).dt.as_unit("us")
    entity_df = pd.DataFrame(
        {
            "_row": np.arange(len(requests)),
            "customer_id": requests["customer_id"].to_numpy(np.int64),
            "terminal_id": requests["terminal_id"].to_numpy(np.int64),
            "event_timestamp": timestamps.to_numpy(),
        }
    )
    service = feature_service(store, service_name)
    joined = historical_features(store, entity_df, service)
    joined = joined.sort_values("_row").set_index("_row").drop(columns=ENTITY_KEYS)
    joined = joined.reindex(np.arange(len(requests)))  # a row Feast dropped stays missing
    entity_values = joined.apply(lambda col: pd.to_numeric(col).astype("float64"))
    frame = entity_values.assign(
        amount=request_amount(requests).to_numpy(np.float64),
        event_timestamp=timestamps.set_axis(entity_values.index),
    )
    return with_request_features(frame).reset_index(drop=True)


def request_amount(requests: pd.DataFrame) -> pd.Series:
    """The payment's amount as the system of record has it, when known (`recorded_amount`,
    joined from the transactions by the runner), else as the request carried it.

    The record matters: a client that starts sending cents changes the request and the
    feature together, and only the record still says what the payment was."""
    if "recorded_amount" in requests.columns:
        return requests["recorded_amount"].fillna(requests["request_amount"])
    return requests["request_amount"]


def compare_values(
    name: str, ids: pd.Series, served: pd.Series, offline: pd.Series, tolerance: float
) -> dict[str, Any]:
    """One feature's served values against their offline ones, row by row (`ids` name
    the rows in the examples: requests here, entities in monitoring/parity.py)."""
    s, o = served.to_numpy(np.float64), offline.to_numpy(np.float64)
    keys = ids.to_numpy()
    s_missing, o_missing = np.isnan(s), np.isnan(o)
    both = ~s_missing & ~o_missing
    with np.errstate(invalid="ignore"):
        differs = both & (np.abs(s - o) > tolerance * np.maximum(1.0, np.abs(o)))
    mismatch = differs | (s_missing != o_missing)
    nonzero = differs & (s != 0) & (o != 0)
    examples = [
        {"id": str(rid), "served": _value(sv), "offline": _value(ov)}
        for rid, sv, ov in zip(
            keys[mismatch][:MAX_EXAMPLES],
            s[mismatch][:MAX_EXAMPLES],
            o[mismatch][:MAX_EXAMPLES],
            strict=True,
        )
    ]
    return {
        "feature": name,
        "mismatch_rate": float(mismatch.mean()) if len(s) else 0.0,
        "mismatches": int(mismatch.sum()),
        "missing_served_only": int((s_missing & ~o_missing).sum()),
        "missing_offline_only": int((o_missing & ~s_missing).sum()),
        "median_abs_diff": _median(np.abs(s - o)[differs]),
        "median_ratio_served_to_offline": _median(s[nonzero] / o[nonzero]),
        "examples": examples,
    }


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if len(values) else None


def _value(x: float) -> float | None:
    return None if np.isnan(x) else float(x)
