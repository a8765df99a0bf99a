"""The `fraudlab` command line: one Typer app that wires every command module in.

Each module under fraudlab/commands/ owns its commands (a group owns its Typer sub-app)
and imports only the foundation (settings, errors, console), never this module: the
wiring goes one way. Commands stay thin: they read settings, call one function of a
plane, and print. Planes are imported inside the commands so `--help` answers at once.
"""

from __future__ import annotations

import typer

from fraudlab.commands import (
    data,
    demo,
    features,
    labels,
    monitor,
    replay,
    scenario,
    serve,
    stack,
    staleness,
    stream,
    train,
)
from fraudlab.console import configure_logging

app = typer.Typer(
    help="fraudlab: a worked, end-to-end reference ML system for payment fraud.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    configure_logging(verbose)


for name, group in (
    ("data", data.app),
    ("features", features.app),
    ("labels", labels.app),
    ("monitor", monitor.app),
    ("scenario", scenario.app),
    ("stack", stack.app),
    ("stream", stream.app),
):
    app.add_typer(group, name=name)
app.command("train")(train.train)
app.command("ablation")(train.ablation)
app.command("feedback-loop")(train.feedback_loop)
app.command("staleness")(staleness.staleness)
app.command("serve")(serve.serve)
app.command("replay")(replay.replay)
app.command("demo")(demo.demo)
app.command("ui")(stack.ui)
