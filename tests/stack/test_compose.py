"""docker-compose.yml against the Compose Specification's JSON schema, and against the
stack's own definition (fraudlab/stack/services.py): every fraudlab container runs the
command `fraudlab stack up` runs, differing only in the addresses the compose network
gives, with the same dependencies, health checks, loopback-only ports and no secret
written down. The Prometheus config and Grafana dashboard are checked against the
metrics the stack exports."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import yaml

from fraudlab.commands.monitor import parse_duration
from fraudlab.settings import Settings
from fraudlab.stack.services import (
    COMPOSE_HOME,
    COMPOSE_NETWORK,
    COMPOSE_ONLY,
    EXTERNAL,
    Service,
    services,
)
from fraudlab.stack.uis import ui_services
from monitoring.policy import DEFAULT_POLICY, load_policy

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
SECRET_KEY = re.compile(r"PASSWORD|TOKEN|SECRET")
FROM_ENVIRONMENT = re.compile(r"\$\{\w+:\?[^}]+\}")  # required variable, with a message
CREDENTIALS_IN_URI = re.compile(r"://[^/@:]+:([^/@]+)@")
PASSWORD_PARAMETER = re.compile(r"password=([^,]+)")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


@pytest.fixture
def stack_services(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Service]:
    """The stack as compose runs it: production profile, the shared volume as home,
    every other setting at its default (no FRAUDLAB_* variable or config file leaks in)."""
    for key in [k for k in os.environ if k.startswith("FRAUDLAB_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    settings = Settings(profile="production", home=COMPOSE_HOME)
    return {s.name: s for s in services(settings, COMPOSE_NETWORK)}


def command_of(spec: dict[str, Any]) -> list[str]:
    """entrypoint + command, the program named without its directory."""
    argv = [str(part) for part in [*spec.get("entrypoint", []), *spec["command"]]]
    return [Path(argv[0]).name, *argv[1:]]


def test_compose_file_is_valid_under_the_compose_specification(compose: dict) -> None:
    schema = json.loads((DEPLOY / "compose-spec.schema.json").read_text())
    validator = jsonschema_rs.validator_for(schema)
    assert [error.message for error in validator.iter_errors(compose)] == []
    # The schema is strict enough to catch a misspelt key, so the check above can fail.
    misspelt = {**compose, "services": {"api": {"image": "x", "helthcheck": {}}}}
    assert not validator.is_valid(misspelt)


@pytest.fixture
def ui_services_of_compose(stack_services: dict[str, Service]) -> dict[str, Service]:
    """`fraudlab ui`'s services for the compose home, bound to the container's network
    (after `stack_services`, for its environment with no FRAUDLAB_* variable)."""
    settings = Settings(profile="production", home=COMPOSE_HOME)
    return {s.name: s for s in ui_services(settings, bind="0.0.0.0", only_applied=False)}


def test_every_compose_service_is_a_stack_service_or_named_as_an_exception(
    compose: dict, stack_services: dict[str, Service], ui_services_of_compose: dict[str, Service]
) -> None:
    expected = {*stack_services, *ui_services_of_compose, *EXTERNAL, *COMPOSE_ONLY}
    assert set(compose["services"]) == expected


def test_each_ui_container_runs_the_command_fraudlab_ui_runs(
    compose: dict, ui_services_of_compose: dict[str, Service]
) -> None:
    """The production profile's MLflow UI is the tracking server itself; Feast's and
    Evidently's run as in `fraudlab ui`, probed where its health check looks."""
    assert set(ui_services_of_compose) == {"feast-ui", "evidently-ui"}
    for name, service in ui_services_of_compose.items():
        spec = compose["services"][name]
        assert command_of(spec) == list(service.argv), name
        port = httpx.URL(service.url).port
        assert spec["ports"] == [f"127.0.0.1:{port}:{port}"], name
        assert f"localhost:{port}{service.health_path}" in " ".join(spec["healthcheck"]["test"])


def test_each_fraudlab_container_runs_the_command_stack_up_runs(
    compose: dict, stack_services: dict[str, Service]
) -> None:
    for name, service in stack_services.items():
        assert command_of(compose["services"][name]) == list(service.argv), name


def test_the_minute_jobs_run_as_often_as_the_policy_plans_them(
    stack_services: dict[str, Service],
) -> None:
    """The policy places the half-hourly minute jobs by the cadence it is told
    (`passes_multiple`); a schedule that ran less often would skip them."""
    argv = stack_services["monitor-minutes"].argv
    assert "--minute-jobs" in argv
    every = parse_duration(argv[argv.index("--every") + 1])
    assert every == load_policy(DEFAULT_POLICY).minute_jobs.every_minutes * 60


def test_the_daily_monitor_looks_at_the_canary_as_often_as_its_test_spends(
    stack_services: dict[str, Service],
) -> None:
    """The sequential canary spends its error one look per canary.look_every_hours:
    a monitor that ran more often would spend it again at every run."""
    argv = stack_services["monitor"].argv
    every = parse_duration(argv[argv.index("--every") + 1])
    assert every == load_policy(DEFAULT_POLICY).jobs.canary.look_every_hours * 3600


def test_containers_get_the_environment_stack_up_sets(
    compose: dict, stack_services: dict[str, Service]
) -> None:
    for name, service in stack_services.items():
        environment = compose["services"][name].get("environment", {})
        assert set(service.env) <= set(environment), name
        for key in ("FRAUDLAB_PROFILE", "FRAUDLAB_HOME", "FRAUDLAB_MLFLOW_TRACKING_URI"):
            if key in service.env:
                assert str(environment[key]) == service.env[key], (name, key)


def test_start_order_and_health_checks_match_the_stack(
    compose: dict, stack_services: dict[str, Service]
) -> None:
    for name, service in stack_services.items():
        spec = compose["services"][name]
        depends_on = spec.get("depends_on", {})
        assert set(depends_on) - set(EXTERNAL) == set(service.depends_on), name
        for dependency, rule in depends_on.items():
            # Started is not enough: each waits for its dependencies' health checks.
            assert rule["condition"] == "service_healthy", (name, dependency)
            assert "healthcheck" in compose["services"][dependency], dependency
        if service.health_path:
            port = COMPOSE_NETWORK.ports[name]
            probe = " ".join(spec["healthcheck"]["test"])
            assert f"localhost:{port}{service.health_path}" in probe, name


def test_published_ports_are_bound_to_loopback_only(compose: dict) -> None:
    for name, spec in compose["services"].items():
        for port in spec.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_secrets_come_only_from_the_environment(compose: dict) -> None:
    for name, spec in compose["services"].items():
        for key, value in spec.get("environment", {}).items():
            value = str(value)
            if SECRET_KEY.search(key):
                assert FROM_ENVIRONMENT.fullmatch(value), (name, key)
            for password in CREDENTIALS_IN_URI.findall(value):
                assert FROM_ENVIRONMENT.fullmatch(password), (name, key)
            for password in PASSWORD_PARAMETER.findall(value):  # Feast's connection string
                assert FROM_ENVIRONMENT.fullmatch(password), (name, key)
        for part in map(str, spec.get("command", [])):
            if part.startswith(">"):  # a Redis ACL password on the command line
                assert FROM_ENVIRONMENT.fullmatch(part[1:]), (name, part)


def test_the_environment_of_every_service_that_needs_a_credential_has_it(compose: dict) -> None:
    """The registry and Redis refuse anonymous clients (test_compose_auth.py runs them):
    each service that talks to them carries the credentials, from the environment."""
    clients = [n for n, spec in compose["services"].items() if "FRAUDLAB_PROFILE" in str(spec)]
    assert {"api", "monitor"} <= set(clients)
    for name in clients:
        environment = compose["services"][name]["environment"]
        assert environment["MLFLOW_TRACKING_USERNAME"] == "fraudlab", name
        assert FROM_ENVIRONMENT.fullmatch(environment["MLFLOW_TRACKING_PASSWORD"]), name
        assert "username=fraudlab,password=" in environment["FRAUDLAB_REDIS_CONNECTION"], name


def test_prometheus_scrapes_each_job_at_its_service_address(
    stack_services: dict[str, Service],
) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    jobs = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    assert set(jobs) == {"api", "monitor-exporter"}
    for job, targets in jobs.items():
        assert job in stack_services
        assert targets == [f"{job}:{COMPOSE_NETWORK.ports[job]}"]


def test_dashboard_queries_only_metrics_the_stack_exports() -> None:
    dashboard = json.loads((DEPLOY / "grafana/dashboards/fraudlab.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {
        re.sub(r"_(bucket|sum|count|total)$", "", name)
        for query in queries
        for name in re.findall(r"fraudlab_\w+", query)
    }
    exported = (REPO_ROOT / "serving/metrics.py").read_text()
    exported += (REPO_ROOT / "fraudlab/stack/exporter.py").read_text()
    assert {name for name in used if f'"{name}"' not in exported} == set()
    # What the issue asks the dashboard to show.
    assert {
        "fraudlab_stage_seconds",  # latency per stage
        "fraudlab_requests",  # routes and decisions
        "fraudlab_feature_fallbacks",
        "fraudlab_shadow_dropped",
        "fraudlab_model_version",
        "fraudlab_monitor_status",  # drift and skew status
    } <= used
    sources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    uids = {panel["datasource"]["uid"] for panel in panels}
    uids |= {target["datasource"]["uid"] for panel in panels for target in panel["targets"]}
    assert uids == {sources["datasources"][0]["uid"]}
