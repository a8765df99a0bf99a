"""A benchmark's arguments are checked before it builds anything: a count below one,
a length of no time or a word where a number belongs is a usage error, not a traceback
after minutes of building a world (`--update-rounds 0` once was)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize(
    ("script", "argument", "said"),
    [
        ("serving.py", ["--update-rounds", "0"], "--update-rounds: must be at least 1, got 0"),
        ("serving.py", ["--requests", "many"], "--requests: not a whole number: 'many'"),
        ("serving.py", ["--workers", "-2"], "--workers: must be at least 1, got -2"),
        ("monitor.py", ["--rows", "0"], "--rows: must be at least 1, got 0"),
        ("monitor.py", ["--rate", "fast"], "--rate: not a whole number: 'fast'"),
        ("online_lookup.py", ["--rounds", "0"], "--rounds: must be at least 1, got 0"),
        ("pit_join.py", ["--repeats", "0"], "--repeats: must be at least 1, got 0"),
        ("startup.py", ["--rounds", "-1"], "--rounds: must be at least 1, got -1"),
        ("stream.py", ["--workers", "0"], "--workers: must be at least 1, got 0"),
        ("stream.py", ["--seconds", "0"], "--seconds: must be above 0, got 0"),
        ("stream.py", ["--seconds", "nan"], "--seconds: must be above 0, got nan"),
        ("spark_offline.py", ["--rows", "0"], "--rows: must be at least 1, got 0"),
        ("network_vs_trees.py", ["--rounds", "0"], "--rounds: must be at least 1, got 0"),
        (
            "network_vs_trees.py",
            ["--bootstrap-rounds", "many"],
            "--bootstrap-rounds: not a whole number: 'many'",
        ),
        ("network_vs_trees.py", ["--train-repeats", "0"], "--train-repeats: must be at least 1"),
        (
            "capacity_sheet.py",
            ["--payments-per-day", "0"],
            "--payments-per-day: must be at least 1",
        ),
        ("capacity_sheet.py", ["--cards", "-5"], "--cards: must be at least 1, got -5"),
        ("capacity_sheet.py", ["--terminals", "1e6"], "--terminals: not a whole number: '1e6'"),
        ("capacity_sheet.py", ["--requests", "0"], "--requests: must be at least 1, got 0"),
        ("capacity_sheet.py", ["--peak-to-mean", "0.5"], "--peak-to-mean: must be at least 1"),
        (
            "capacity_sheet.py",
            ["--target-utilisation", "1.5"],
            "--target-utilisation: must be above 0 and at most 1, got 1.5",
        ),
        (
            "capacity_sheet.py",
            ["--target-utilisation", "0"],
            "--target-utilisation: must be above 0 and at most 1, got 0",
        ),
        (
            "capacity_sheet.py",
            ["--cost-per-core-hour", "free"],
            "--cost-per-core-hour: not a number: 'free'",
        ),
        (
            "capacity_sheet.py",
            ["--cost-per-core-hour", "inf"],
            "--cost-per-core-hour: must be above 0 and finite, got inf",
        ),
    ],
)
def test_a_bad_count_is_a_usage_error(
    script: str, argument: list[str], said: str, tmp_path: Path
) -> None:
    home = tmp_path / "world"
    homed = (
        ["--home", str(home)] if script in ("serving.py", "monitor.py", "capacity_sheet.py") else []
    )
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *homed, *argument],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert said in done.stderr
    assert "Traceback" not in done.stderr
    assert not home.exists()  # nothing was built


def test_the_online_lookup_benchmark_runs_on_a_few_lookups() -> None:
    """It crashed unpacking the lookup after `_entity_values` gained the views' ages,
    unnoticed until it was next run: a few lookups, its values checked against Feast's."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "online_lookup.py"), "--lookups", "20", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "online_lookup store=sqlite lookups=20 " in done.stdout
