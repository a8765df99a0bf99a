"""The offline gate: may a new version become `challenger`?

First, the leak signature: a version trained on a naive join is also scored on
point-in-time features (what serving will see); far worse there than on its own test
set, it learned from labels of the future and gets no alias at all.

The first version of a model becomes `champion`. A later one is scored together with
the champion on the same held-out rows; a paired bootstrap of the difference in
average precision decides, and only a whole 90% interval above zero lets it through.
The bootstrap resamples days and cards, not payments (pipelines/evaluate.py Clusters):
frauds come in bursts per card and per day, and a row bootstrap's interval is too
narrow. The row bootstrap is computed beside it, once, so the difference shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from fraudlab.settings import Settings, TrainingSettings
from pipelines.evaluate import Clusters, GateComparison, bootstrap_ap_difference
from pipelines.models import feature_matrix, score
from pipelines.registry import CHALLENGER, CHAMPION, alias_version, load_version, set_alias


def leak_signature(
    t: TrainingSettings, version: str, own_ap: float, pit_ap: float | None
) -> str | None:
    """Why the gate refuses `version` for a leak, or None (`pit_ap`: its average
    precision on point-in-time features, when its own test set was built otherwise)."""
    if pit_ap is None or not t.leak_check or math.isnan(pit_ap) or math.isnan(own_ap):
        return None  # no point-in-time AP (a test period without a fraud): nothing to judge
    if pit_ap >= (1 - t.leak_max_ap_drop) * own_ap:
        return None
    return (
        f"gate refuses v{version}: the leak signature, average precision {pit_ap:.3f} on "
        f"point-in-time features against {own_ap:.3f} on its own test set (more than "
        f"training.leak_max_ap_drop = {t.leak_max_ap_drop:g} lower)"
    )


@dataclass(frozen=True)
class GateDecision:
    alias: str | None  # the alias the version received, if any
    comparison: GateComparison | None  # None when there was no champion to compare with
    note: str
    by_rows: GateComparison | None = None  # the same, resampling payments: for contrast


def offline_gate(
    client: MlflowClient,
    settings: Settings,
    test: pd.DataFrame,
    candidate_scores: np.ndarray,
    version: str,
    test_period: Callable[[str], pd.DataFrame],
    by_rows: bool = False,
) -> GateDecision:
    """`test_period(service)`: the same test rows with another feature service's
    features, so the champion is scored on the features it was trained on. `by_rows`:
    also the row bootstrap, to show beside the deciding one (`fraudlab train`)."""
    name = settings.training.model_name
    champion = alias_version(client, name, CHAMPION)
    if champion is None:
        set_alias(client, name, CHAMPION, version)
        return GateDecision(CHAMPION, None, "no champion yet: this version becomes champion")
    incumbent = load_version(client, name, champion)
    own = test_period(incumbent.tags.feature_service)
    rows = own.set_index("transaction_id").loc[test["transaction_id"]]  # the same payments
    champion_scores = score(incumbent.model, feature_matrix(rows, incumbent.features))
    comparisons = [
        bootstrap_ap_difference(
            test["label"].to_numpy(),
            candidate_scores,
            champion_scores,
            settings.training.bootstrap_rounds,
            seed=settings.simulation.seed,
            clusters=clusters,
        )
        for clusters in ((Clusters.of(test), None) if by_rows else (Clusters.of(test),))
    ]
    comparison, rows = comparisons[0], (comparisons[1] if by_rows else None)
    if not comparison.candidate_wins:
        note = f"gate fails against champion v{champion}"
        return GateDecision(None, comparison, note, rows)
    set_alias(client, name, CHALLENGER, version)
    note = f"gate passes against champion v{champion}"
    return GateDecision(CHALLENGER, comparison, note, rows)
