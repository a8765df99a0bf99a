"""Serving's native scorers give the training-side scores (pipelines.models.score),
missing values included: the same model must not score differently in production."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.models import score, train_lightgbm, train_logreg
from serving.scoring import BoosterScorer, LinearScorer

FEATURES = [f"f{i}" for i in range(6)]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2_000, len(FEATURES)))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(size=len(x)) > 2.0).astype(np.int8)
    x[rng.random(x.shape) < 0.15] = np.nan  # missing values everywhere
    x[:, 5] = np.where(rng.random(len(x)) < 0.5, np.nan, x[:, 5])
    probe = rng.normal(size=(300, len(FEATURES)))
    probe[rng.random(probe.shape) < 0.3] = np.nan
    probe[:3] = np.nan  # rows with nothing known at all
    return x, y, probe


def test_linear_scorer_matches_the_sklearn_pipeline_on_rows_with_nans(data) -> None:
    x, y, probe = data
    model = train_logreg(x, y, seed=0)
    scorer = LinearScorer(model)
    served = np.array([scorer(row) for row in probe])
    np.testing.assert_allclose(served, score(model, probe), rtol=1e-9, atol=1e-12)


def test_booster_scorer_matches_the_booster_on_rows_with_nans(data) -> None:
    x, y, probe = data
    model = train_lightgbm(x[:1_500], y[:1_500], x[1_500:], y[1_500:], FEATURES, seed=0)
    scorer = BoosterScorer(model)
    served = np.array([scorer(row) for row in probe])
    np.testing.assert_allclose(served, score(model, probe), rtol=1e-12, atol=1e-15)
