"""The home's Evidently workspace: every monitor run's drift report is also a snapshot in
it, stamped with the run's time, so `evidently ui --workspace <home>/evidently` shows
drift and the score's distribution over time (one project per model name, its
dashboard set up on first use).

The drift job's HTML shows one day; the workspace is the history. It is written only
when the report is computed (`html`: the daily monitor, `fraudlab monitor run`); the
scenarios skip both for speed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monitoring.drift import SCORE

SCORE_TAB = "Scores"
DRIFT_TAB = "Drift"


def add_drift_snapshot(workspace_dir: Path, model_name: str, snapshot: Any) -> str:
    """Add the report's snapshot to the model's project; returns the snapshot's id."""
    from evidently.ui.workspace import Workspace

    workspace = Workspace(str(workspace_dir))
    found = workspace.search_project(model_name)
    project = found[0] if found else _new_project(workspace, model_name)
    return str(workspace.add_run(project.id, snapshot).id)


def _new_project(workspace: Any, model_name: str) -> Any:
    """The project with its dashboard, saved in one write (Evidently's `add_panel` lists a
    panel twice in a tab that already exists)."""
    from evidently.sdk.models import DashboardModel, DashboardTabModel, PanelMetric
    from evidently.sdk.panels import line_plot_panel

    project = workspace.create_project(
        model_name, description="fraudlab's monitor: a drift report per run"
    )

    def line(title: str, metric: str, legend: str, **labels: str) -> Any:
        value = PanelMetric(legend=legend, metric=metric, metric_labels=labels)
        return line_plot_panel(title, [value])

    tabs = {
        DRIFT_TAB: [
            line("Share of features drifted", "DriftedColumnsCount", "share", value_type="share"),
            line("Score drift (PSI against the reference)", "ValueDrift", "PSI", column=SCORE),
        ],
        SCORE_TAB: [
            line("Mean score", "MeanValue", "mean", column=SCORE),
            line("99th percentile of the score", "QuantileValue", "p99", column=SCORE),
        ],
    }
    dashboard = DashboardModel(
        tabs=[
            DashboardTabModel(title=title, panels=[p.id for p in panels])
            for title, panels in tabs.items()
        ],
        panels=[p for panels in tabs.values() for p in panels],
    )
    workspace.save_dashboard(project.id, dashboard)
    return project
