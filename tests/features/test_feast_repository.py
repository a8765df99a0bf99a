"""The Feast repository works for a Feast user as it is: the `feast` CLI and `feast ui`,
run in features/repo with no FRAUDLAB_* variable exported, see what fraudlab registered in
the embedded default home, and the effective config fraudlab writes points the same CLI
at any other home or profile."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from features.store import EFFECTIVE_CONFIG, REPO_DIR, apply_definitions, repo_config
from fraudlab.settings import Settings
from serving.process import free_port
from tests.conftest import running_ui

FEAST = str(Path(sys.executable).with_name("feast"))


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("FRAUDLAB_", "FEAST_"))}


def feast(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        [FEAST, *args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_feast_cli_in_the_repository_lists_what_fraudlab_applied_with_nothing_exported(
    tmp_path: Path,
) -> None:
    checkout = tmp_path / "checkout"  # a checkout's layout: features/repo and .fraudlab/
    shutil.copytree(REPO_DIR, checkout / "features" / "repo")
    apply_definitions(Settings(home=checkout / ".fraudlab"))  # the embedded default home

    listed = feast("feature-services", "list", cwd=checkout / "features" / "repo")

    assert "fraud_v1" in listed and "fraud_v2" in listed


def test_the_effective_config_points_the_feast_cli_at_the_settings_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "elsewhere")
    apply_definitions(settings)

    config = settings.feast_dir / EFFECTIVE_CONFIG
    listed = feast("-f", str(config), "feature-views", "list", cwd=REPO_DIR)

    assert "customer_spending" in listed and "terminal_risk" in listed
    assert yaml.safe_load(config.read_text())["registry"] == str(settings.feast_dir / "registry.db")


def test_the_production_profile_uses_redis_and_the_embedded_one_sqlite(tmp_path: Path) -> None:
    embedded = repo_config(Settings(home=tmp_path))
    production = repo_config(
        Settings(home=tmp_path, profile="production", redis_connection="127.0.0.1:6390")
    )

    assert embedded.online_store.type == "sqlite"
    assert embedded.online_store.path == str(tmp_path / "feast" / "online.db")
    assert production.online_store.type == "redis"
    assert production.online_store.connection_string == "127.0.0.1:6390"


def test_feast_ui_serves_the_repository_with_nothing_exported(tmp_path: Path) -> None:
    """`feast ui` (Feast's own web UI), started in features/repo of a checkout with the
    demo's home applied: its page loads, and its registry API lists our feature services
    and views."""
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO_DIR, checkout / "features" / "repo")
    apply_definitions(Settings(home=checkout / ".fraudlab"))
    url = f"http://127.0.0.1:{free_port()}"
    command = [FEAST, "ui", "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1]]
    repo = checkout / "features" / "repo"
    with running_ui(command, f"{url}/health", cwd=repo, env=clean_env()):
        page = httpx.get(url)
        assert page.status_code == 200 and "<title>Feast" in page.text
        (project,) = httpx.get(f"{url}/projects-list.json").json()["projects"]
        assert project["id"] == "fraudlab"
        api = f"{url}/api/v1"
        services = httpx.get(f"{api}/feature_services", params={"project": "fraudlab"}).json()
        views = httpx.get(f"{api}/feature_views", params={"project": "fraudlab"}).json()
    names = {s["spec"]["name"] for s in services["featureServices"]}
    assert {"fraud_v1", "fraud_v2", "fraud_v3"} <= names
    assert "customer_spending" in {v["spec"]["name"] for v in views["featureViews"]}
