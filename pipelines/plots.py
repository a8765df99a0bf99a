"""Figures every training run logs: PR curve, calibration and feature importance."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only: no screen on a server or in CI

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve


def pr_curve(labels: npt.ArrayLike, scores: npt.ArrayLike, title: str) -> Figure:
    precision, recall, _ = precision_recall_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(recall, precision)
    ax.axhline(
        float(np.mean(np.asarray(labels, dtype=np.float64))),
        ls="--",
        c="grey",
        label="fraud rate (random model)",
    )
    ax.set(xlabel="recall", ylabel="precision", title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def calibration(labels: npt.ArrayLike, scores: npt.ArrayLike, title: str) -> Figure:
    observed, predicted = calibration_curve(labels, scores, n_bins=10, strategy="quantile")
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([0, 1], [0, 1], ls="--", c="grey", label="perfectly calibrated")
    ax.plot(predicted, observed, marker="o", label="model")
    ax.set(
        xscale="symlog",
        yscale="symlog",
        xlabel="mean predicted probability",
        ylabel="observed fraud rate",
        title=title,
    )
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def importance(values: dict[str, float], title: str) -> Figure:
    names = sorted(values, key=values.__getitem__)
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(names) + 1.2))
    ax.barh(names, [values[n] for n in names])
    ax.set(title=title, xlabel="importance")
    fig.tight_layout()
    return fig
