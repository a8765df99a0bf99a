"""What a model version's traffic is expected to look like, from its reference sample
(pipelines/reference.py: held-out features and the version's own scores): the shares
of payments it should flag and decline at its thresholds, its score distribution, and
per feature a band of values and a missing share. The fast guardrails
(monitoring/guardrail.py) hold live traffic to these, minutes after it is served.

Derived when read, not stored: the reference and the thresholds are the version's own,
so nothing here can disagree with them. One derivation per version and process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipelines.reference import SCORE, load_reference

if TYPE_CHECKING:
    from fraudlab.settings import Settings
    from pipelines.reference import ReferenceSample

SCORE_BINS = 10  # deciles of the reference's scores: the PSI's bins


@dataclass(frozen=True)
class Band:
    low: float  # the reference's `quantile` (non-missing values)
    high: float  # ... and its 1 - `quantile`
    missing: float  # share of reference rows where the feature is missing


@dataclass(frozen=True)
class Expectations:
    version: str
    features: list[str]
    flag_share: float  # reference rows at or above the review threshold
    decline_share: float  # ... at or above the decline threshold
    review_threshold: float
    decline_threshold: float
    score_edges: np.ndarray  # inner edges of the reference's score deciles
    score_shares: np.ndarray  # reference share per bin (1/10 each, but for ties)
    bands: dict[str, Band]
    out_of_band_share: float  # expected share outside a band: 2 * quantile


def expectations_of(reference: ReferenceSample, quantile: float) -> Expectations:
    """The version's expectations; `quantile`: each band's tail on either side."""
    scores = reference.frame[SCORE].to_numpy(np.float64)
    tags = reference.tags
    edges = np.unique(np.quantile(scores, np.linspace(0, 1, SCORE_BINS + 1)[1:-1]))
    bands = {}
    for name in reference.features:
        values = pd.to_numeric(reference.frame[name], errors="coerce").to_numpy(np.float64)
        present = values[~np.isnan(values)]
        low, high = (
            np.quantile(present, [quantile, 1 - quantile]) if len(present) else (np.nan, np.nan)
        )
        bands[name] = Band(float(low), float(high), float(np.isnan(values).mean()))
    return Expectations(
        version=reference.version,
        features=list(reference.features),
        flag_share=float((scores >= tags.threshold_review).mean()),
        decline_share=float((scores >= tags.threshold_decline).mean()),
        review_threshold=tags.threshold_review,
        decline_threshold=tags.threshold_decline,
        score_edges=edges,
        score_shares=bin_shares(scores, edges),
        bands=bands,
        out_of_band_share=2 * quantile,
    )


def bin_shares(scores: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, scores, side="right"), minlength=len(edges) + 1)
    return counts / max(len(scores), 1)


def psi(expected: np.ndarray, observed: np.ndarray, floor: float = 1e-4) -> float:
    """Population stability index of two share vectors over the same bins. Written out
    here rather than through Evidently (the daily drift job's): the guardrail runs every
    few minutes and must take milliseconds; a share of 0 is floored, as PSI needs."""
    e, o = np.maximum(expected, floor), np.maximum(observed, floor)
    return float(np.sum((o - e) * np.log(o / e)))


_LOADED: dict[tuple[str, str, str, float], Expectations] = {}


def load_expectations(settings: Settings, version: str, quantile: float) -> Expectations:
    """The expectations of registered `version`, read once per process: a reference is
    an MLflow download, and the guardrail runs every few minutes."""
    key = (settings.tracking_uri, settings.training.model_name, version, quantile)
    if key not in _LOADED:
        _LOADED[key] = expectations_of(load_reference(settings, version_number=version), quantile)
    return _LOADED[key]
