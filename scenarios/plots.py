"""The run on one simulated-time axis: scores, drift and skew, decisions, matured-label
precision and recall, fraud losses; with a mark at injection, detection, each action,
the fix and recovery, so the whole story reads top to bottom in one picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd

from monitoring.policy import load_policy
from scenarios.engine import RunResult
from scenarios.timeline import frame

MARK_STYLE = {
    "injection": ("tab:red", "-"),
    "detection": ("tab:orange", "--"),
    "action": ("tab:purple", ":"),
    "fix": ("tab:blue", "-."),
    "recovery": ("tab:green", "-"),
}


def plot_timeline(result: RunResult, summary: dict[str, Any], path: Path) -> Path:
    """The six panels, one shared simulated-time axis, the story's marks on each."""
    table = frame(result.records)
    # Each day's figures are stamped at its middle; monitor verdicts at the next midnight.
    mid = table["date"] + pd.Timedelta(hours=12)
    verdict = table["date"] + pd.Timedelta(days=1)
    policy = load_policy(result.settings.monitoring.policy_path)
    drift_share = policy.rule("input-drift").threshold
    skewed_above = policy.jobs.skew.feature_mismatch_above
    missed_factor = policy.jobs.performance.missed_fraud_factor
    review_cost = result.settings.training.review_cost
    fig, axes = plt.subplots(6, 1, figsize=(11, 14), sharex=True)
    scores, drift, skew, decisions, labels, losses = axes

    scores.fill_between(mid, table["score_p50"], table["score_p99"], alpha=0.25, label="p50-p99")
    scores.plot(mid, table["score_p90"], marker="o", label="p90")
    scores.set_yscale("log")
    scores.set_ylabel("champion score")
    scores.set_title("score distribution per day")

    drift.plot(verdict, table["drift_share"], marker="o", label="share of features drifted")
    drift.plot(verdict, table["score_drift"], marker="x", ls="", label="score drift (1 = yes)")
    drift.axhline(drift_share, color="grey", ls=":", label=f"policy: drift share {drift_share:.0%}")
    drift.set_ylabel("drift")
    drift.set_title("drift (Evidently, against the champion's reference)")

    skew.plot(verdict, table["skew_max_mismatch"], marker="o", color="tab:brown")
    skew.axhline(
        skewed_above, color="grey", ls=":", label=f"policy: {skewed_above:.0%} of requests"
    )
    skew.set_ylabel("worst feature\nmismatch rate")
    skew.set_title("training/serving skew (served vs recomputed offline)")

    decisions.plot(mid, table["review_rate"], marker="o", label="reviewed or declined")
    decisions.plot(mid, table["decline_rate"], marker="s", label="declined")
    decisions.set_yscale("symlog", linthresh=0.01)
    decisions.set_ylabel("share of payments")
    decisions.set_title("decisions")

    labels.plot(verdict, table["recall"], marker="o", label="recall")
    labels.plot(verdict, table["precision"], marker="s", label="precision")
    labels.plot(
        verdict, table["label_coverage"], color="grey", ls=":", label="frauds reported (expected)"
    )
    labels.set_ylim(-0.05, 1.05)
    labels.set_ylabel(f"last {policy.jobs.performance.label_lookback_days:g} days")
    labels.set_title("champion route on labels known at the time (chargebacks arrive late)")
    # What the retrain rule reads: missed frauds on approved traffic against the
    # version's reference (recall reads low once declines go unlabelled).
    missed = labels.twinx()
    missed.plot(
        verdict,
        table["missed_fraud_ratio"],
        color="tab:purple",
        marker="^",
        label="missed frauds / reference",
    )
    missed.axhline(
        missed_factor, color="tab:purple", ls=":", lw=0.8, label=f"policy: x{missed_factor:g}"
    )
    missed.set_ylim(bottom=0)
    missed.set_ylabel("missed frauds\nx reference")
    missed.legend(loc="upper right", fontsize=7)

    losses.bar(
        mid, table["fraud_losses"], width=0.8, color="tab:red", alpha=0.6, label="approved fraud"
    )
    losses.plot(mid, table["cost"], marker="o", color="black", label="cost (fraud + reviews)")
    losses.set_yscale("symlog", linthresh=100)
    losses.set_ylabel("per day\n(amount)")
    losses.set_title(
        f"what it cost: approved fraud, and fraud plus {review_cost:g} per reviewed payment"
    )

    for ax in axes:
        _marks(ax, result, summary)
        ax.grid(alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(loc="upper left", fontsize=7, ncols=3)
    losses.xaxis.set_major_formatter(mdates.DateFormatter("%b %d"))
    fig.suptitle(f"{result.scenario.name}: {result.scenario.title}", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _marks(ax: plt.Axes, result: RunResult, summary: dict[str, Any]) -> None:
    marks = [(e.kind, pd.Timestamp(e.at), e.text) for e in result.events if e.kind in MARK_STYLE]
    if summary.get("recovered_at"):
        marks.append(("recovery", pd.Timestamp(summary["recovered_at"]), "recovered"))
    top = ax is ax.figure.axes[0]
    for kind, at, text in marks:
        color, style = MARK_STYLE[kind]
        ax.axvline(at, color=color, ls=style, lw=1.2, alpha=0.8)
        if top:
            label = kind if kind != "action" else text.split(" ", 1)[0]
            ax.annotate(
                label,
                (at, 1.0),
                xycoords=("data", "axes fraction"),
                rotation=90,
                fontsize=7,
                color=color,
                va="top",
                ha="right",
            )


def plot_skew_features(result: RunResult, path: Path) -> Path | None:
    """Which features mismatched, day by day: the skew job's per-feature evidence."""
    import json

    rows = {}
    for record in result.records:
        run_dir = result.settings.monitoring_dir / "runs"
        stamp = (pd.Timestamp(record.date) + pd.Timedelta(days=1)).strftime("%Y%m%dT%H%M%S")
        skew_file = run_dir / stamp / "skew.json"
        if skew_file.exists():
            table = json.loads(skew_file.read_text())["details"].get("features", [])
            rows[record.date[:10]] = {row["feature"]: row["mismatch_rate"] for row in table}
    if not rows:
        return None
    grid = pd.DataFrame(rows).fillna(0.0).sort_index()
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * grid.shape[1] + 3), 0.35 * len(grid) + 2))
    image = ax.imshow(grid.to_numpy(), aspect="auto", cmap="Reds", vmin=0, vmax=1)
    ax.set_yticks(range(len(grid)), grid.index, fontsize=8)
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=60, ha="right", fontsize=8)
    fig.colorbar(image, ax=ax, label="share of sampled requests that mismatch")
    ax.set_title(f"{result.scenario.name}: skew per feature and day")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
