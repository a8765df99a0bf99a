"""The checks `make lint` runs, in the suite too, so CI holds every change to them:
ruff (lint and format) and mypy on the packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing_and_the_code_is_formatted() -> None:
    lint = run(str(BIN / "ruff"), "check", ".")
    assert lint.returncode == 0, lint.stdout[-3000:]
    formatted = run(str(BIN / "ruff"), "format", "--check", ".")
    assert formatted.returncode == 0, formatted.stdout[-3000:]


def test_the_packages_type_check() -> None:
    checked = run(str(BIN / "mypy"))  # configured in pyproject.toml
    assert checked.returncode == 0, checked.stdout[-5000:]
