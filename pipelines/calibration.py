"""Scores to probabilities: a calibration step chosen by a comparison, and the error it
leaves.

A model's score ranks payments; it is a probability only if, among payments scored
0.3, three in ten are fraud. LightGBM's `scale_pos_weight` and early stopping on
average precision bend that, so anything that reads a score as a chance (the monitor's
label-free estimate, a cost in currency) reads it through a calibration fitted after
every other choice is made.

Two ways are compared on every training run (`compare_calibrations`): Platt scaling, a
logistic curve on the score's logit (two parameters: smooth, needs few frauds), and
isotonic regression (any increasing step function: no shape assumed, needs more frauds,
and a step where frauds are sparse). Each is fitted on the validation period and judged
on the test period by Brier score; the lower wins and is refitted on both periods.
`fraudlab train` prints the comparison with the expected calibration error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

FloatArray = npt.NDArray[np.float64]
Method = Literal["none", "platt", "isotonic"]
ECE_BINS = 10
MAX_POINTS = 64  # an isotonic map is stored as an MLflow tag: a few hundred characters


@dataclass(frozen=True)
class Calibration:
    """Platt, p = sigmoid(slope * logit(score) + intercept), or, when `xs` is given,
    isotonic: p interpolated through the points (xs, ys). The identity (1, 0, no points)
    is what a version registered without one gets. Decisions keep the raw score and its
    thresholds; this maps scores to probabilities for the monitor's label-free estimate.

    The labels it is fitted on are those known at the cutoff: only a share `coverage` of
    the period's frauds had been reported by then (data/labels.py ReportingDelays), so
    the fitted odds are low by that factor, and the fit takes it back. The result is the
    probability of fraud, reported or not."""

    slope: float = 1.0
    intercept: float = 0.0
    xs: tuple[float, ...] = ()
    ys: tuple[float, ...] = ()

    @property
    def method(self) -> Method:
        if self.xs:
            return "isotonic"
        return "none" if (self.slope, self.intercept) == (1.0, 0.0) else "platt"

    @classmethod
    def fit(
        cls,
        labels: npt.ArrayLike,
        scores: FloatArray,
        coverage: float = 1.0,
        method: Method = "platt",
    ) -> Calibration:
        y = np.asarray(labels)
        if method == "none" or not 0 < y.sum() < len(y) or not 0 < coverage <= 1:
            return cls()  # one class only, or no report yet: nothing to fit
        if method == "isotonic":
            return _fit_isotonic(y, np.asarray(scores, np.float64), coverage)
        logit = _logit(scores).reshape(-1, 1)
        fitted = LogisticRegression(C=1e6).fit(logit, y)  # C large: no shrinkage
        return cls(float(fitted.coef_[0, 0]), float(fitted.intercept_[0] - math.log(coverage)))

    def __call__(self, scores: npt.ArrayLike) -> FloatArray:
        s = np.asarray(scores, np.float64)
        if self.xs:
            return np.interp(s, self.xs, self.ys)
        z = self.slope * _logit(s) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def points_tag(self) -> str:
        """The isotonic points as an MLflow tag value ("x:y;x:y"), "" for Platt."""
        return ";".join(f"{x:.6g}:{y:.6g}" for x, y in zip(self.xs, self.ys, strict=True))

    @classmethod
    def from_tags(cls, slope: float, intercept: float, points: str) -> Calibration:
        pairs = [p.split(":") for p in points.split(";") if p]
        xs = tuple(float(x) for x, _ in pairs)
        ys = tuple(float(y) for _, y in pairs)
        return cls(slope, intercept, xs, ys)


def _fit_isotonic(y: npt.NDArray[np.int_], scores: FloatArray, coverage: float) -> Calibration:
    fitted = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(scores, y)
    xs, ys = fitted.X_thresholds_, fitted.y_thresholds_
    if len(xs) > MAX_POINTS:  # keep the ends and evenly spaced steps between them
        keep = np.unique(np.linspace(0, len(xs) - 1, MAX_POINTS).round().astype(int))
        xs, ys = xs[keep], ys[keep]
    # Known-label odds are low by the coverage: odds / coverage is the odds of fraud.
    true_ys = ys / (ys + coverage * (1 - ys))
    return Calibration(xs=tuple(float(x) for x in xs), ys=tuple(float(v) for v in true_ys))


def _logit(scores: npt.ArrayLike) -> FloatArray:
    p = np.clip(np.asarray(scores, np.float64), 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


def calibration_error(labels: npt.ArrayLike, probabilities: npt.ArrayLike) -> float:
    """Expected calibration error over ECE_BINS bins of equal size (by probability):
    the mean gap between predicted and observed fraud rate, weighted by bin size.
    Equal-width bins would put nearly every payment in the first bin at a fraud rate
    under 1%, and the error would say nothing about the scores that matter."""
    y, p = np.asarray(labels, np.float64), np.asarray(probabilities, np.float64)
    if not len(y):
        return math.nan
    order = np.argsort(p, kind="stable")
    gaps = [
        abs(p[b].mean() - y[b].mean()) * len(b)
        for b in np.array_split(order, min(ECE_BINS, len(y)))
    ]
    return float(sum(gaps) / len(y))


@dataclass(frozen=True)
class CalibrationRow:
    method: Method
    brier: float  # on the test period's known labels
    calibration_error: float
    mean_probability: float


@dataclass(frozen=True)
class CalibrationChoice:
    rows: list[CalibrationRow]  # raw scores first, then each method
    fraud_rate: float  # known frauds per test payment

    @property
    def chosen(self) -> Method:
        fitted = [r for r in self.rows if r.method != "none" and math.isfinite(r.brier)]
        return min(fitted, key=lambda r: r.brier).method if fitted else "none"


def compare_calibrations(
    valid_labels: npt.ArrayLike,
    valid_scores: FloatArray,
    test_labels: npt.ArrayLike,
    test_scores: FloatArray,
) -> CalibrationChoice:
    """Raw scores, Platt and isotonic, each fitted on validation and judged on test."""
    y_test = np.asarray(test_labels)
    rows = []
    methods: tuple[Method, ...] = ("none", "platt", "isotonic")
    for method in methods:
        p = Calibration.fit(valid_labels, valid_scores, method=method)(test_scores)
        rows.append(
            CalibrationRow(
                method,
                float(brier_score_loss(y_test, p)) if len(y_test) else math.nan,
                calibration_error(y_test, p),
                float(p.mean()) if len(p) else math.nan,
            )
        )
    return CalibrationChoice(rows, float(y_test.mean()) if len(y_test) else math.nan)
