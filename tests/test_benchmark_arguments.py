"""A benchmark's arguments are checked before it builds anything: a count below one
or a word where a count belongs is a usage error, not a traceback after minutes of
building a world (`--update-rounds 0` once was)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SERVING = Path(__file__).resolve().parents[1] / "benchmarks" / "serving.py"


@pytest.mark.parametrize(
    ("argument", "said"),
    [
        (["--update-rounds", "0"], "--update-rounds: must be at least 1, got 0"),
        (["--requests", "many"], "--requests: not a whole number: 'many'"),
        (["--workers", "-2"], "--workers: must be at least 1, got -2"),
    ],
)
def test_a_bad_count_is_a_usage_error(argument: list[str], said: str, tmp_path: Path) -> None:
    home = tmp_path / "world"
    done = subprocess.run(
        [sys.executable, str(SERVING), "--home", str(home), *argument],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert said in done.stderr
    assert "Traceback" not in done.stderr
    assert not home.exists()  # nothing was built
