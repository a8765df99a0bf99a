"""The benchmark scripts' count and length arguments: a non-number, or a value below the
least that means anything, is argparse's usage error (exit 2, one line) before any world
is built; `--update-rounds 0` once built a world and then died in `statistics.median`."""

from __future__ import annotations

import argparse
import math


def at_least_one(text: str) -> int:
    """A count: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a {what}: {text!r}") from None


def positive_seconds(text: str) -> float:
    """A length of time: a number of seconds above 0."""
    value = _number(text, "number of seconds")
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def positive_number(text: str) -> float:
    """A price or a rate: a finite number above 0 (an infinite price makes no sheet)."""
    value = _number(text, "number")
    if not 0 < value < math.inf:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be above 0 and finite, got {text}")
    return value


def at_least_one_times(text: str) -> float:
    """A factor over a mean, such as peak over mean: a finite number of at least 1."""
    value = _number(text, "number")
    if not 1 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be at least 1 and finite, got {text}")
    return value


def share(text: str) -> float:
    """A share of a whole, such as a target utilisation: above 0, at most 1."""
    value = _number(text, "number")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, got {text}")
    return value
