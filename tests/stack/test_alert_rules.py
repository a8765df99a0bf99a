"""The stack's Prometheus alert rules (deploy/prometheus/alerts.yml): generated from the
monitoring policy and committed, valid for Prometheus, loaded by both stacks, and
behaving as their promtool unit tests (deploy/prometheus/alerts_test.yml) say."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fraudlab.stack.processes import write_prometheus_config
from fraudlab.stack.services import native_network, stack_dir
from monitoring.alert_rules import alert_rules_yaml
from monitoring.policy import load_policy
from tests.conftest import make_settings, services_required

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy/prometheus"
REGENERATE = "fraudlab monitor alert-rules --out deploy/prometheus/alerts.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool (Debian's prometheus package) from deploy/prometheus/."""
    program = shutil.which("promtool")
    if program is None:
        message = "promtool is not installed (Debian: apt-get install prometheus)"
        if services_required():
            pytest.fail(f"{message}, and FRAUDLAB_REQUIRE_SERVICES=1")
        pytest.skip(message)
    return subprocess.run(
        [program, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )


def test_the_committed_rules_are_the_ones_the_policy_generates() -> None:
    committed = (PROMETHEUS / "alerts.yml").read_text()
    assert committed == alert_rules_yaml(load_policy()), (
        f"deploy/prometheus/alerts.yml and monitoring/policy.yaml disagree: run `{REGENERATE}`"
    )


def test_every_rule_the_monitor_acts_on_has_an_alert_and_good_news_has_none() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"][0]["rules"]
    named = {rule["labels"]["policy_rule"] for rule in rules}
    policy = load_policy()
    assert named == {r.name for r in policy.rules if r.action not in ("promote", "release")}
    assert "FraudlabGuardrailInputs" in {rule["alert"] for rule in rules}


def test_promtool_accepts_the_rules_and_the_config_that_loads_them() -> None:
    for args in (("check", "rules", "alerts.yml"), ("check", "config", "prometheus.yml")):
        done = promtool(*args)
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_alerts_fire_as_their_unit_tests_say() -> None:
    done = promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_both_stacks_load_the_one_rule_file() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    compose = yaml.safe_load((PROMETHEUS.parents[1] / "docker-compose.yml").read_text())
    volumes = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in volumes
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in volumes


def test_the_native_stacks_prometheus_config_names_the_committed_rules(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    stack_dir(settings).mkdir(parents=True)
    write_prometheus_config(settings, native_network(settings))
    written = stack_dir(settings) / "prometheus.yml"
    assert yaml.safe_load(written.read_text())["rule_files"] == [str(PROMETHEUS / "alerts.yml")]
    done = promtool("check", "config", str(written))
    assert done.returncode == 0, done.stdout + done.stderr


def test_alert_rules_to_a_missing_folder_is_refused_with_the_folder_named(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from fraudlab.cli import app

    out = tmp_path / "no" / "such" / "alerts.yml"
    result = CliRunner().invoke(app, ["monitor", "alert-rules", "--out", str(out)])
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "does not exist" in " ".join(result.output.split()) and not out.exists()
    assert "Traceback" not in result.output
