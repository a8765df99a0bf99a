"""`fraudlab scenario list|run`: one failure story end to end, with a timeline report."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Column, Table

from fraudlab.console import console, user_errors

if TYPE_CHECKING:
    from scenarios.world import Scale

app = typer.Typer(
    help="Failure stories: inject skew, drift or a bad model and watch the system react.",
    no_args_is_help=True,
)


class ScaleChoice(StrEnum):
    small = "small"
    full = "full"


@app.command("list")
@user_errors
def list_command() -> None:
    """The failure stories, what each breaks and who should catch it."""
    from scenarios.catalog import SCENARIOS

    table = Table("what it shows", "caught by", "policy", "days")
    table.columns.insert(0, Column("name", no_wrap=True, style="bold"))
    for s in SCENARIOS.values():
        table.add_row(
            s.name,
            s.title,
            s.detector or "(nothing to catch)",
            " then ".join(s.expected_actions) or "-",
            f"{s.days}/{s.full_days or s.days}",
        )
    console.print(table)
    console.print("run one: [bold]fraudlab scenario run NAME[/] (see --help)")


@app.command("run")
@user_errors
def run_command(
    name: str = typer.Argument(..., help="A scenario from `fraudlab scenario list`."),
    scale: ScaleChoice = typer.Option(
        ScaleChoice.small,
        help="small: 600 customers (~1.2k payments a day); full: 2,000 (~4k a day).",
    ),
    seed: int = typer.Option(11, min=0, help="Seed of the simulated world."),
    runs_dir: Path = typer.Option(
        Path("runs"), help="Where runs/<scenario>/<timestamp>/ are written."
    ),
    publish: bool = typer.Option(
        False, help="Also write docs/scenarios/<name>.md and its plots (the committed run)."
    ),
) -> None:
    """Run one scenario through the real API and monitor; write report.md, plots and
    summary.json under runs/<scenario>/<timestamp>/. Exits 1 if the story did not hold."""
    from scenarios.catalog import get_scenario

    scenario = get_scenario(name)
    docs = Path(__file__).resolve().parents[2] / "docs" / "scenarios" if publish else None
    summary, report = run_and_report(scenario.name, scale.value, seed, runs_dir, docs)
    console.print(f"\nreport: [bold]{report}[/]")
    if not all(summary["checks"].values()):
        raise typer.Exit(1)


def run_and_report(
    name: str, scale: Scale, seed: int, runs_dir: Path, publish_to: Path | None = None
) -> tuple[dict, Path]:
    """Run, write the report, print the verdict; shared with `fraudlab demo`."""
    from scenarios.catalog import get_scenario
    from scenarios.engine import run_scenario
    from scenarios.report import simulated_duration, write_run

    scenario = get_scenario(name)
    console.print(f"[bold]{scenario.name}[/]: {scenario.title}")
    result = run_scenario(
        scenario,
        scale,
        seed,
        runs_dir.resolve(),
        say=lambda line: console.print(line, highlight=False),
    )
    summary = write_run(result, runs_dir.resolve(), publish_to)
    if publish_to is not None:
        console.print(f"published: {publish_to / (scenario.name + '.md')}")
    table = Table("check", "result", title=f"{scenario.name}: did the story hold?")
    for check, ok in summary["checks"].items():
        table.add_row(check.replace("_", " "), "[green]yes[/]" if ok else "[red]no[/]")
    console.print(table)
    if summary.get("time_to_detect_hours") is not None:
        console.print(
            f"time to detect: {simulated_duration(summary['time_to_detect_hours'])} of "
            "simulated time; "
            f"actions: {', '.join(a['action'] for a in summary['actions']) or 'none'}"
        )
    return summary, result.run_dir / "report.md"
