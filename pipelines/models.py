"""The two models: a logistic-regression baseline and LightGBM, each with its own
deliberate answer to class imbalance.

Both take a plain float matrix whose columns are the feature service's features in
order, with NaN for missing values, and both score with `score()`: the same call serving
makes on a one-row NumPy array.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

ModelKind = Literal["logreg", "lightgbm"]
Model: TypeAlias = Pipeline | lgb.Booster
Matrix = npt.NDArray[np.float64]
Labels = npt.NDArray[np.int8]


ClassWeighting = Literal["balanced", "none"]


def train_logreg(
    x_train: Matrix,
    y_train: Labels,
    seed: int,
    weighting: ClassWeighting = "none",
    weights: npt.NDArray[np.float64] | None = None,
) -> Pipeline:
    """Baseline first: a linear model any reviewer can read.

    Imbalance: by default no class weights, every payment counts once, so the score
    stays a probability (costs and the threshold read it as one). `"balanced"` weighs
    each fraud as much as all the legitimate payments it stands for; `fraudlab ablation
    --weighting` measures both, and on the demo's data balanced weights rank worse and
    are miscalibrated (docs/training-plane.md quotes the run). Missing values are imputed
    with the median and flagged, so "no history" stays visible to the model instead of
    becoming a zero. `weights`: per row (inverse propensities, pipelines/feedback_loop.py).
    """
    class_weight = "balanced" if weighting == "balanced" else None
    model = make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(class_weight=class_weight, max_iter=2_000, C=0.1, random_state=seed),
    )
    return model.fit(x_train, y_train, logisticregression__sample_weight=weights)


def train_lightgbm(
    x_train: Matrix,
    y_train: Labels,
    x_valid: Matrix,
    y_valid: Labels,
    feature_names: list[str],
    seed: int,
    weights: npt.NDArray[np.float64] | None = None,
    valid_weights: npt.NDArray[np.float64] | None = None,
) -> lgb.Booster:
    """Gradient-boosted trees; missing values go down their own learned branch.

    Imbalance: `scale_pos_weight` at the square root of the class ratio, a middle way
    between ignoring the minority and fully rebalancing (which wrecks calibration).
    Early stopping watches validation average precision, never the test period.
    `weights`, `valid_weights`: per row (inverse propensities, pipelines/feedback_loop.py).
    """
    positives = max(int(y_train.sum()), 1)
    params: dict[str, Any] = {
        "objective": "binary",
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_data_in_leaf": 40,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "scale_pos_weight": float(np.sqrt((len(y_train) - positives) / positives)),
        "metric": "average_precision",
        "seed": seed,
        "deterministic": True,
        "num_threads": 2,
        "verbosity": -1,
    }
    train = lgb.Dataset(
        x_train, y_train, weight=weights, feature_name=feature_names, free_raw_data=True
    )
    valid = lgb.Dataset(x_valid, y_valid, weight=valid_weights, reference=train)
    return lgb.train(
        params,
        train,
        num_boost_round=400,
        valid_sets=[valid],
        callbacks=[lgb.early_stopping(40, verbose=False)],
    )


def feature_matrix(frame: pd.DataFrame, features: list[str]) -> Matrix:
    """The model input: `features` in order as float64, NaN for missing."""
    return frame[features].to_numpy(dtype=np.float64, na_value=np.nan)


def score(model: Model, x: Matrix) -> npt.NDArray[np.float64]:
    """Fraud probability per row, for either kind of model."""
    if isinstance(model, lgb.Booster):
        return np.asarray(model.predict(x, num_iteration=model.best_iteration or None))
    return np.asarray(model.predict_proba(x)[:, 1])


def feature_importance(model: Model, names: list[str]) -> dict[str, float]:
    """Gain for LightGBM; absolute standardized coefficient for the baseline."""
    if isinstance(model, lgb.Booster):
        gains = model.feature_importance(importance_type="gain")
        return dict(zip(names, (float(g) for g in gains), strict=True))
    coefs = np.abs(model[-1].coef_[0][: len(names)])
    return dict(zip(names, (float(c) for c in coefs), strict=True))
