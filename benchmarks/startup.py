"""How long does a fraudlab process take to import what it needs, against the plain way?

Every scoring API start (each scenario deploy, each restart), stream worker and monitor
process first imports Feast, MLflow and LightGBM. Feast decorates its definition classes
with typeguard's `@typechecked`, which rewrites and recompiles them at import; our
packages turn that off before Feast loads (features/__init__.py). Each way runs in a
fresh interpreter, interleaved in rounds so a busy machine slows both alike:

- feast: `import feast` as Feast ships it, against `import features, feast` (ours);
- api: `import serving.app`, the scoring API's module, as it was (Feast imported first,
  so instrumented, and skops with it), against `import serving.app` as it is.

Prints the median seconds per way and, last,
`startup rounds=N feast_plain_s=X feast_ours_s=X api_plain_s=X api_ours_s=X api_ratio=R`
where R is the plain API import over ours.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WAYS = {
    "feast_plain": "import feast",
    "feast_ours": "import features, feast",
    # As before: Feast first (instrumented before `features` could prevent it), and
    # skops imported with the module (now only to read an sklearn model).
    "api_plain": "import feast, skops.io, serving.app",
    "api_ours": "import serving.app",
}


def timed(statement: str) -> float:
    """Seconds to run `statement` in a fresh interpreter (its start-up excluded)."""
    script = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise SystemExit(f"`{statement}` failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    sys.path.insert(0, str(ROOT))  # `benchmarks._arguments`
    from benchmarks._arguments import at_least_one

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=at_least_one, default=5, help="interleaved rounds per way")
    args = parser.parse_args()
    for statement in WAYS.values():  # once each, untimed: .pyc files written, disk cache warm
        timed(statement)
    seconds: dict[str, list[float]] = {way: [] for way in WAYS}
    started = time.perf_counter()
    for _ in range(args.rounds):
        for way, statement in WAYS.items():
            seconds[way].append(timed(statement))
    median = {way: statistics.median(times) for way, times in seconds.items()}
    for way, statement in WAYS.items():
        print(f"  {way:<12} {median[way]:.2f} s   ({statement})")
    print(f"  ({time.perf_counter() - started:.0f} s in all)")
    print(
        f"startup rounds={args.rounds} "
        + " ".join(f"{way}_s={median[way]:.2f}" for way in WAYS)
        + f" api_ratio={median['api_plain'] / median['api_ours']:.2f}"
    )


if __name__ == "__main__":
    main()
