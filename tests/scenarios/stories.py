"""What every story test shares: one runs folder per session (its world cache builds
each world once), running a story and publishing it as --publish would, and reading
what the skew job named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scenarios.catalog import get_scenario
from scenarios.engine import RunResult, run_scenario
from scenarios.report import write_run

SEED = 11


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One runs folder for the session: its world cache builds each world once."""
    return tmp_path_factory.mktemp("runs")


def run(name: str, runs_root: Path) -> tuple[RunResult, dict[str, Any]]:
    result = run_scenario(get_scenario(name), "small", SEED, runs_root, say=print)
    docs = runs_root / "docs"  # what --publish writes into docs/scenarios
    summary = write_run(result, runs_root, publish_to=docs)
    assert "![timeline](img/" in (docs / f"{name}.md").read_text()
    assert f"[{name}]({name}.md)" in (docs / "README.md").read_text()
    for artefact in ("report.md", "summary.json", "timeline.png", "timeline.json"):
        assert (result.run_dir / artefact).stat().st_size > 0, artefact
    assert json.loads((result.run_dir / "summary.json").read_text()) == json.loads(
        json.dumps(summary, default=str)
    )
    return result, summary


def skew_on_detection_day(result: RunResult) -> list[str]:
    """The features the skew job named on the day the fault was caught."""
    day = next(r for r in result.records if any(d["job"] == "skew" for d in r.decisions))
    stamp = (result.records[day.day].date[:10]).replace("-", "")
    runs = sorted((result.settings.monitoring_dir / "runs").glob("*/skew.json"))
    (skew,) = [p for p in runs if p.parent.name.startswith(_next_day(stamp))]
    return json.loads(skew.read_text())["details"]["skewed_features"]


def _next_day(yyyymmdd: str) -> str:
    import pandas as pd

    return (pd.Timestamp(yyyymmdd) + pd.Timedelta(days=1)).strftime("%Y%m%d")


def assert_story_held(summary: dict[str, Any]) -> None:
    failed = [name for name, ok in summary["checks"].items() if not ok]
    assert not failed, f"story did not hold: {failed}; see the report"
