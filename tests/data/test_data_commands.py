"""`fraudlab data generate|validate`: summaries on success, one clear line on bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from fraudlab.cli import app

runner = CliRunner()
SMALL = ["--customers", "100", "--terminals", "200", "--days", "10", "--seed", "1"]


def test_generate_then_validate(tmp_path: Path) -> None:
    out = tmp_path / "tx.parquet"
    generated = runner.invoke(app, ["data", "generate", *SMALL, "--out", str(out)])
    assert generated.exit_code == 0, generated.output
    assert "payments" in generated.output
    assert "leaked_card" in generated.output
    validated = runner.invoke(app, ["data", "validate", str(out)])
    assert validated.exit_code == 0, validated.output
    assert "valid transactions file" in validated.output


def test_generate_honours_start_date_and_new_pattern(tmp_path: Path) -> None:
    out = tmp_path / "tx.parquet"
    args = ["--start-date", "2025-02-03", "--new-pattern-start-day", "2", "--out", str(out)]
    many_cards = ["--customers", "2000", "--terminals", "200", "--days", "10"]
    result = runner.invoke(app, ["data", "generate", *many_cards, *args])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert frame["event_timestamp"].min().date().isoformat() == "2025-02-03"
    assert (frame["fraud_pattern"] == "card_testing").any()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--days", "0"], "--days"),
        (["--customers", "-5"], "--customers"),
        (["--start-date", "2026-02-30"], "start date must look like 2026-01-31"),
        (["--days", "5", "--new-pattern-start-day", "9"], "new pattern start day"),
    ],
)
def test_bad_generate_values_fail_clearly(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["data", "generate", *args, "--out", str(tmp_path / "x.parquet")])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "x.parquet").exists()


def test_validate_bad_file_fails_with_the_problems(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("transaction_id,amount\n1,-5\n")
    result = runner.invoke(app, ["data", "validate", str(path)])
    assert result.exit_code == 2
    assert "event_timestamp: missing required column" in result.output
    assert "amount: 1 row(s) are <= 0" in result.output
    assert isinstance(result.exception, SystemExit)


def test_every_command_turns_our_errors_into_one_line() -> None:
    """Each command is wrapped by user_errors: a FraudlabError is a red line and an exit
    code, never a traceback."""

    def callbacks(typer_app: Any) -> dict[str, Any]:
        found = {c.name or c.callback.__name__: c.callback for c in typer_app.registered_commands}
        for group in typer_app.registered_groups:
            found |= {f"{group.name} {n}": c for n, c in callbacks(group.typer_instance).items()}
        return found

    every = callbacks(app)
    assert {"train", "serve", "replay", "demo", "data generate", "monitor run"} <= set(every)
    assert [name for name, c in every.items() if not getattr(c, "handles_user_errors", False)] == []
