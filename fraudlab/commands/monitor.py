"""`fraudlab monitor run|status|alert-rules`: the operations plane's jobs, policy and
decision log, and the Prometheus alert rules generated from the policy."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from fraudlab.console import console, err_console, user_errors
from fraudlab.errors import ConfigError, FraudlabError, MissingInput
from fraudlab.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd

    from monitoring.decisions import MonitorRun
    from monitoring.window import Window

app = typer.Typer(
    help="Drift, skew, delayed-label performance, canary analysis "
    "and the policy that acts on them.",
    no_args_is_help=True,
)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def parse_duration(text: str) -> float:
    """'10m' -> 600.0 seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ConfigError(f"--every {text!r}: use a number and a unit, like 30s, 10m, 1h")
    return float(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def logged_now(settings: Settings) -> pd.Timestamp:
    """The monitor's default "now": just after the service clock's latest logged
    answer (serving/clock.py), so a payment stamped in the future moves nothing."""
    import pandas as pd

    from serving.prediction_log import latest_service_time

    latest = latest_service_time(settings.prediction_log_path)
    if latest is None:
        raise MissingInput("the prediction log is empty: serve some traffic first")
    return latest + pd.Timedelta(microseconds=1)


def _window(settings: Settings, since: str | None, until: str | None) -> Window:
    import pandas as pd

    from monitoring.window import Window

    end = pd.Timestamp(until) if until else logged_now(settings)
    start = (
        pd.Timestamp(since) if since else end - pd.Timedelta(hours=settings.monitoring.window_hours)
    )
    try:
        return Window.of(start, end)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def decisions_table(run: MonitorRun) -> Table:
    table = Table(
        "rule",
        "action",
        "condition",
        "value",
        "taken",
        "why / outcome",
        title=f"decisions at {run.now}",
    )
    for d in run.decisions:
        value = "-" if d.value is None else f"{d.value:.4g}"
        table.add_row(
            d.rule,
            d.action,
            d.condition,
            value,
            "yes" if d.taken else "no",
            d.outcome or d.held_back or d.why,
        )
    if not run.decisions:
        table.add_row("(none)", "-", "-", "-", "-", "no rule triggered")
    return table


def findings_table(run: MonitorRun) -> Table:
    table = Table("job", "status", "summary", title=f"findings {run.since} .. {run.until}")
    for f in run.findings:
        colour = {"ok": "green", "alert": "red"}.get(f["status"], "yellow")
        summary = f["summary"] if len(f["summary"]) <= 240 else f["summary"][:239] + "…"
        table.add_row(f["job"], f"[{colour}]{f['status']}[/]", summary)
    return table


@app.command("run")
@user_errors
def run(
    since: str = typer.Option(
        None,
        help="Window start, ISO time (default: --until minus settings.monitoring.window_hours).",
    ),
    until: str = typer.Option(
        None,
        help="Window end and 'now' for labels, ISO time "
        "(default: the service clock of the latest logged request).",
    ),
    every: str = typer.Option(None, help="Repeat on a schedule, e.g. 10m (Ctrl-C stops)."),
    times: int = typer.Option(None, min=1, help="With --every: stop after this many runs."),
    policy: Path = typer.Option(
        None, help="Policy YAML (default: monitoring.policy_path, else monitoring/policy.yaml)."
    ),
    dry_run: bool = typer.Option(False, help="Decide, but take no action."),
    minute_jobs: bool = typer.Option(
        False,
        "--minute-jobs",
        help="Only the jobs meant to run every few minutes (freshness, guardrails, store "
        "parity), over the policy's minute_jobs.window_minutes by default; run it with "
        "--every as often as minute_jobs.every_minutes.",
    ),
) -> None:
    """Run drift, skew, freshness, performance and canary jobs over a window, then the
    policy."""
    import pandas as pd

    from monitoring.policy import load_policy
    from monitoring.runner import run_monitor

    settings = get_settings()
    rules = load_policy(policy or settings.monitoring.policy_path)
    pause = parse_duration(every) if every else None
    done = 0
    while True:
        try:
            start, end = since, until
            if minute_jobs and since is None:
                last = pd.Timestamp(until) if until else logged_now(settings)
                minutes = pd.Timedelta(minutes=rules.minute_jobs.window_minutes)
                start, end = str(last - minutes), str(last)
            window = _window(settings, start, end)
            result = run_monitor(
                settings,
                window,
                rules,
                execute=not dry_run,
                progress=lambda msg: console.log(msg),
                minute_jobs_only=minute_jobs,
            )
        except FraudlabError as exc:
            if pause is None:
                raise
            # On a schedule, a run that cannot be done (no traffic yet, a service down) is
            # reported and tried again at the next tick: the schedule itself goes on.
            err_console.print(f"[bold red]run skipped:[/] {exc}; next run in {every}")
        else:
            console.print(findings_table(result))
            console.print(decisions_table(result))
            console.print(f"reports: {result.reports_dir}")
            if not minute_jobs:  # the daily jobs' drift report is in the workspace too
                workspace = settings.evidently_workspace_dir
                console.print(f"over time: `fraudlab ui` (Evidently's UI on {workspace})")
        done += 1
        if pause is None or (times is not None and done >= times):
            return
        time.sleep(pause)


@app.command("status")
@user_errors
def status(last: int = typer.Option(5, min=1, help="How many runs to show.")) -> None:
    """The latest monitor runs: findings and decisions."""
    from monitoring.decisions import DecisionLog
    from monitoring.findings import JOBS

    settings = get_settings()
    runs = DecisionLog(settings.decision_log_path).runs()[-last:]
    if not runs:
        console.print("no monitor runs yet: `fraudlab monitor run`")
        return
    table = Table("now", *JOBS, "actions taken", title="monitor runs")
    for r in runs:
        status_of = {f["job"]: f["status"] for f in r["findings"]}
        taken = [f"{d['action']} ({d['rule']})" for d in r["decisions"] if d["taken"]]
        table.add_row(
            r["now"][:19],
            *[status_of.get(job, "-") for job in JOBS],
            ", ".join(taken) or "-",
        )
    console.print(table)


@app.command("alert-rules")
@user_errors
def alert_rules(
    out: Path = typer.Option(
        None,
        help="Write the rule file here, e.g. deploy/prometheus/alerts.yml (default: print it).",
    ),
    policy: Path = typer.Option(
        None, help="Policy YAML (default: monitoring.policy_path, else monitoring/policy.yaml)."
    ),
) -> None:
    """Prometheus alert rules generated from the policy: one per rule the monitor acts
    on, and the API's own alerts on the same thresholds. The policy is the only place
    a threshold lives: after changing it, run
    `fraudlab monitor alert-rules --out deploy/prometheus/alerts.yml` again."""
    from monitoring.alert_rules import alert_rules_yaml
    from monitoring.policy import DEFAULT_POLICY, load_policy

    source = policy or get_settings().monitoring.policy_path or DEFAULT_POLICY
    text = alert_rules_yaml(load_policy(source), source)
    if out is None:
        typer.echo(text, nl=False)
        return
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: the folder {out.parent} does not exist")
    out.write_text(text)
    err_console.print(f"wrote {out}")
