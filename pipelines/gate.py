"""The offline gate: may a new version become `challenger`?

The first version of a model becomes `champion`. A later one is scored together with
the champion on the same held-out rows; a paired bootstrap of the difference in
average precision decides, and only a whole 90% interval above zero lets it through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from fraudlab.settings import Settings
from pipelines.evaluate import GateComparison, bootstrap_ap_difference
from pipelines.models import feature_matrix, score
from pipelines.registry import CHALLENGER, CHAMPION, alias_version, load_version, set_alias


@dataclass(frozen=True)
class GateDecision:
    alias: str | None  # the alias the version received, if any
    comparison: GateComparison | None  # None when there was no champion to compare with
    note: str


def offline_gate(
    client: MlflowClient,
    settings: Settings,
    test: pd.DataFrame,
    candidate_scores: np.ndarray,
    version: str,
    test_period: Callable[[str], pd.DataFrame],
) -> GateDecision:
    """`test_period(service)`: the same test rows with another feature service's
    features, so the champion is scored on the features it was trained on."""
    name = settings.training.model_name
    champion = alias_version(client, name, CHAMPION)
    if champion is None:
        set_alias(client, name, CHAMPION, version)
        return GateDecision(CHAMPION, None, "no champion yet: this version becomes champion")
    incumbent = load_version(client, name, champion)
    own = test_period(incumbent.tags.feature_service)
    rows = own.set_index("transaction_id").loc[test["transaction_id"]]  # the same payments
    champion_scores = score(incumbent.model, feature_matrix(rows, incumbent.features))
    comparison = bootstrap_ap_difference(
        test["label"].to_numpy(),
        candidate_scores,
        champion_scores,
        settings.training.bootstrap_rounds,
        seed=settings.simulation.seed,
    )
    if not comparison.candidate_wins:
        return GateDecision(None, comparison, f"gate fails against champion v{champion}")
    set_alias(client, name, CHALLENGER, version)
    return GateDecision(CHALLENGER, comparison, f"gate passes against champion v{champion}")
