"""`fraudlab ui` on a home with a registered champion, an applied Feast repository and
a monitor's Evidently workspace: each tool's own UI answers on loopback with this
home's content, through its API and rendered in headless Chromium (screenshots under
the test's temporary folder), `fraudlab stack status` lists the three, and
`fraudlab stack down` stops them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from playwright.sync_api import Browser, expect
from typer.testing import CliRunner

from fraudlab.cli import app
from fraudlab.settings import get_settings
from monitoring.drift import evidently_report
from monitoring.evidently_workspace import add_drift_snapshot
from monitoring.policy import load_policy
from serving.process import free_port
from tests.conftest import shows
from tests.monitoring.conftest import MonitorWorld

runner = CliRunner()


@pytest.fixture
def home(monitor_world: MonitorWorld, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    settings = monitor_world.settings
    monkeypatch.setenv("FRAUDLAB_HOME", str(settings.home))
    get_settings.cache_clear()
    yield settings.home
    runner.invoke(app, ["stack", "down"])  # whatever the test did, nothing stays running
    get_settings.cache_clear()


def a_drift_snapshot(workspace: Path) -> str:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"amount": rng.gamma(2, 30, 500), "score": rng.beta(1, 50, 500)})
    drift = load_policy().jobs.drift
    snapshot = evidently_report(frame, frame, ["amount", "score"], drift)
    return add_drift_snapshot(workspace, "fraud-detector", snapshot)


def rendered(
    browser: Browser, url: dict[str, str], monitor: MonitorWorld, snapshot: str, shots: Path
) -> None:
    """What a user sees in each UI, rendered by Chromium once its API calls are done."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    # MLflow: the model's page, its champion alias on the champion's version row.
    shows(page, f"{url['mlflow']}/#/models/fraud-detector", "@ champion", shots / "mlflow.png")
    row = page.get_by_role("row").filter(has_text="@ champion")
    expect(row).to_contain_text(f"Version {monitor.champion.version}")
    # Feast: the project's feature services, as its UI lists them.
    shows(page, f"{url['feast']}/p/fraudlab/feature-service", "fraud_v2", shots / "feast.png")
    expect(page.get_by_role("row").filter(has_text="fraud_v1")).to_have_count(1)
    # Evidently: the model's project, the monitor's snapshot among its reports, and the
    # dashboard's history panels.
    shows(page, url["evidently"], "fraud-detector", shots / "evidently-projects.png")
    page.get_by_role("link", name="fraud-detector").click()
    page.wait_for_url("**/projects/*")
    shows(page, page.url, "Score drift (PSI against the reference)", shots / "evidently.png")
    shows(page, f"{page.url.rstrip('/')}/reports", snapshot, shots / "evidently-reports.png")
    page.close()


def test_ui_serves_each_tool_on_this_home_and_stack_down_stops_them(
    home: Path, monitor_world: MonitorWorld, browser: Browser, tmp_path: Path
) -> None:
    snapshot = a_drift_snapshot(get_settings().evidently_workspace_dir)
    ports = {name: free_port() for name in ("mlflow", "feast", "evidently")}
    args = [arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))]
    started = runner.invoke(app, ["ui", *args])
    assert started.exit_code == 0, started.output
    url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    for name in ports:
        assert url[name] in started.output

    model = httpx.get(
        f"{url['mlflow']}/ajax-api/2.0/mlflow/registered-models/get",
        params={"name": "fraud-detector"},
    ).json()["registered_model"]
    assert "champion" in {a["alias"] for a in model["aliases"]}
    services = httpx.get(
        f"{url['feast']}/api/v1/feature_services", params={"project": "fraudlab"}
    ).json()
    assert {"fraud_v1", "fraud_v2"} <= {s["spec"]["name"] for s in services["featureServices"]}
    (project,) = httpx.get(f"{url['evidently']}/api/projects").json()
    assert project["name"] == "fraud-detector"

    rendered(browser, url, monitor_world, snapshot, tmp_path)

    listed = runner.invoke(app, ["stack", "status"], env={"COLUMNS": "200"})
    for name in ("mlflow-ui", "feast-ui", "evidently-ui"):
        (line,) = [row for row in listed.output.splitlines() if f" {name} " in row]
        assert "running" in line and "healthy" in line, line

    stopped = runner.invoke(app, ["stack", "down"])
    assert stopped.exit_code == 0, stopped.output
    for name in url:
        with pytest.raises(httpx.ConnectError):
            httpx.get(url[name], timeout=2)
