"""The world a scenario runs in: its own simulated history, Feast repository, MLflow
store and trained champion, all inside the run folder, so a run never touches the
demo's working folder or another run.

Two scales. `small` (600 customers) is what the test suite and the committed runs in
docs/scenarios/ use; `full` is the demo's population (2,000), for a closer look with
`fraudlab scenario run NAME --scale full`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import sqlite3
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from data.simulator import SimulationConfig
from features.store import apply_definitions
from fraudlab.settings import Settings
from pipelines.world import WorldBuilder, WorldRecipe
from serving.process import free_port

Scale = Literal["small", "full"]
Overrides = dict[str, dict[str, Any]]  # settings section -> values

# Population and training calendar per scale. The champion is trained on the days
# before `cutoff_day`; the scenario's own days follow it.
_POPULATION: dict[Scale, dict[str, int]] = {
    "small": {"customers": 600, "terminals": 1_200},
    "full": {"customers": 2_000, "terminals": 4_000},
}
_TRAINING: dict[str, Any] = {
    "cutoff_day": 80,
    "warmup_days": 30,  # full 30-day windows everywhere, so the drift reference is too
    "validation_days": 5,
    "test_days": 5,
    "gap_days": 1,
    "label_maturity_days": 4,
    "bootstrap_rounds": 100,
    "reference_sample_rows": 8_000,  # most of the held-out days: weekends need rows too
}
# Every scenario at a scale shares one calendar, so that all but the drift story run
# on the very same payments (and their losses compare day for day with the baseline's).
SIMULATED_SCENARIO_DAYS = 40  # >= the longest story (baseline at full scale: 28)


@dataclass(frozen=True)
class WorldSpec:
    """Everything that decides a world: same spec, same data, same champion."""

    scale: Scale
    seed: int
    new_pattern_day: int | None = None  # scenario day the card-testing attack starts
    new_pattern_daily_share: float = 1e-3  # its intensity: cards tested per customer-day
    # (a negative day: it began that many days before the cutoff, in the training data)
    shadow_service: str | None = None  # also a model on this service, shadow-scored

    @property
    def cutoff_day(self) -> int:
        return int(_TRAINING["cutoff_day"])

    @property
    def simulation_days(self) -> int:
        return self.cutoff_day + SIMULATED_SCENARIO_DAYS

    @property
    def key(self) -> str:
        """Folder name of this world in the cache: one per distinct spec."""
        attack = (
            ""
            if self.new_pattern_day is None
            else (f"-attack{self.new_pattern_day}x{self.new_pattern_daily_share:g}")
        )
        if self.shadow_service:
            attack += f"-shadow-{self.shadow_service}"
        # A changed population or training calendar must not reuse an old world.
        stable = self.config(Path("."))
        stable["serving"] = {}
        digest = hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.scale}-seed{self.seed}{attack}-{digest}"

    def config(self, home: Path) -> dict[str, Any]:
        """The settings of this world, as a fraudlab config file holds them."""
        return {
            "profile": "embedded",  # a run is self-contained: SQLite MLflow, SQLite online
            "home": str(home),
            "simulation": {
                **_POPULATION[self.scale],
                "days": self.simulation_days,
                "seed": self.seed,
                "start_date": "2026-01-01",
            },
            "training": dict(_TRAINING),
            "serving": {
                "alias_poll_seconds": 0.5,
                "admin_token": secrets.token_hex(16),  # the monitor acts through the admin API
            },
            "monitoring": {"skew_sample_rows": 1_000},
        }


def prepare_world(
    spec: WorldSpec, run_dir: Path, cache: Path, overrides: Overrides | None = None
) -> tuple[Path, Settings]:
    """The run's own copy of the world (built once per spec into `cache`), with its
    config file (`overrides`: run settings by section, e.g. the run's own streams);
    returns the config path (the API and worker children read it too) and Settings."""
    built = cache / spec.key
    if not (built / "world.yaml").exists():
        _build_into_cache(spec, built)
    home = run_dir / "world"
    shutil.copytree(built / "world", home)
    _rehome_registry(home / "mlflow.db", str(built / "world"), str(home))
    config_path, settings = write_config(spec, run_dir, overrides)

    apply_definitions(settings)  # Feast's registry names the table paths of this copy
    return config_path, settings


def _build_into_cache(spec: WorldSpec, built: Path) -> None:
    """Build at the final path (MLflow stores absolute artifact URIs); the marker file
    `world.yaml` is written last, so a half-built world is never used, only rebuilt."""
    shutil.rmtree(built, ignore_errors=True)
    try:
        _, settings = write_config(spec, built)
        WorldBuilder(settings, recipe(spec, settings)).build()
        (built / "world.yaml").write_text(yaml.safe_dump(asdict(spec)))
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise


def _rehome_registry(db: Path, old: str, new: str) -> None:
    """Point the copied MLflow store's artifact locations at the copy's own folder."""
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            columns = [
                r[1]
                for r in conn.execute(f'PRAGMA table_info("{table}")')
                if "CHAR" in r[2].upper() or r[2].upper() == "TEXT"
            ]
            for column in columns:
                conn.execute(
                    f'UPDATE "{table}" SET "{column}" = REPLACE("{column}", ?, ?) '
                    f'WHERE "{column}" LIKE ?',
                    (old, new, f"%{old}%"),
                )


def write_config(
    spec: WorldSpec, run_dir: Path, overrides: Overrides | None = None
) -> tuple[Path, Settings]:
    """The run's fraudlab.yaml (the server child reads it too) and its Settings."""
    run_dir.mkdir(parents=True, exist_ok=True)
    values = spec.config(run_dir / "world")
    for section, changed in (overrides or {}).items():
        values.setdefault(section, {}).update(changed)
    port = free_port()  # the run's own API, beside any other server on this machine
    values["serving"]["port"] = port
    values["monitoring"]["api_url"] = f"http://127.0.0.1:{port}"
    path = run_dir / "fraudlab.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path, Settings(**values)


def recipe(spec: WorldSpec, settings: Settings) -> WorldRecipe:
    """The payments (with the attack, if the story has one), their features and the
    champion: LightGBM on point-in-time features, the online store as of the cutoff."""
    new_pattern = None if spec.new_pattern_day is None else spec.cutoff_day + spec.new_pattern_day
    simulation = replace(
        SimulationConfig.from_settings(settings.simulation),
        new_pattern_start_day=new_pattern,
        new_pattern_daily_share=spec.new_pattern_daily_share,
    )
    return WorldRecipe(
        simulation,
        models=("lightgbm",),
        cutoff_day=spec.cutoff_day,
        challenger_service=spec.shadow_service,
    )
