"""One builder of a world: simulated payments, feature tables, the Feast registry and
online store, and trained, registered models, all under one settings home.

The demo, the scenarios, the benchmarks and the tests all build their worlds here, each
from a `WorldRecipe`; the steps are public so the demo can show them one at a time.
A recipe without a simulation builds on the transactions and feature tables already in
the home (a test's home links them from a shared world).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

import pandas as pd

from data.calendar import Calendar
from data.simulator import GenerationSummary, SimulationConfig, generate
from data.validate import load_transactions
from features.build import build_feature_tables
from features.store import apply_definitions, materialize
from fraudlab.settings import Settings
from pipelines.models import ModelKind
from pipelines.registry import CHALLENGER, connect, set_alias
from pipelines.train import JoinKind, TrainingOutcome, run_training

Progress = Callable[[str], None]


@dataclass(frozen=True)
class WorldRecipe:
    simulation: SimulationConfig | None = None  # None: the home's transactions as they are
    models: tuple[ModelKind, ...] = ()  # trained together, in this order, on one training set
    cutoff_day: int | None = None  # training cutoff and online snapshot (default: settings)
    # alias -> model kind, set after training; None: the offline gate decides as usual.
    aliases: dict[str, ModelKind] | None = None
    join: JoinKind = "pit"
    # Also train the first kind on this feature service and make it `challenger`, so
    # the API shadow-scores it beside the champion on the same payments (a comparison).
    challenger_service: str | None = None


@dataclass
class World:
    settings: Settings
    transactions: pd.DataFrame
    calendar: Calendar
    cutoff: pd.Timestamp  # the training cutoff; the online store holds its snapshot
    outcomes: dict[ModelKind, TrainingOutcome] = field(default_factory=dict)

    def version(self, kind: ModelKind) -> str:
        return self.outcomes[kind].version


class WorldBuilder:
    """The steps in order; `build` runs the ones the recipe asks for."""

    def __init__(self, settings: Settings, recipe: WorldRecipe) -> None:
        self.settings = settings
        self.recipe = recipe

    @property
    def cutoff_day(self) -> int:
        return self.recipe.cutoff_day or self.settings.training.cutoff_day

    @cached_property
    def transactions(self) -> pd.DataFrame:
        """The home's table, read once (after `generate`, when the recipe simulates)."""
        return load_transactions(self.settings)

    def generate(self, on_day: Callable[[int], None] | None = None) -> GenerationSummary:
        assert self.recipe.simulation is not None, "this recipe builds on existing data"
        self.__dict__.pop("transactions", None)  # a new table replaces any read before
        return generate(self.recipe.simulation, self.settings.transactions_path, on_day)

    def build_features(self) -> dict[str, int]:
        return build_feature_tables(
            self.transactions,
            self.settings.feature_data_dir,
            self.settings.training.label_delay_days,
        )

    def apply(self) -> list[str]:
        return apply_definitions(self.settings)

    def cutoff(self) -> pd.Timestamp:
        return Calendar.of(self.transactions["event_timestamp"]).start(self.cutoff_day)

    def materialize(self) -> datetime:
        """The online store as of the cutoff: the snapshot serving starts from."""
        end = self.cutoff().to_pydatetime()
        materialize(self.settings, end=end, payment_state=True)
        return end

    def train(self, progress: Progress = lambda _: None) -> list[TrainingOutcome]:
        recipe = self.recipe
        outcomes = run_training(
            self.settings,
            list(recipe.models),
            self.settings.training.feature_service,
            recipe.join,
            self.cutoff_day,
            progress,
            self.transactions,
        )
        if recipe.aliases:
            by_kind = {o.kind: o for o in outcomes}
            client = connect(self.settings)
            for alias, kind in recipe.aliases.items():
                set_alias(client, self.settings.training.model_name, alias, by_kind[kind].version)
                by_kind[kind].alias = alias
        if recipe.challenger_service:
            (other,) = run_training(
                self.settings,
                list(recipe.models[:1]),
                recipe.challenger_service,
                recipe.join,
                self.cutoff_day,
                progress,
                self.transactions,
            )
            set_alias(
                connect(self.settings), self.settings.training.model_name, CHALLENGER, other.version
            )
            other.alias = CHALLENGER
            outcomes.append(other)
        return outcomes

    def build(self, progress: Progress = lambda _: None) -> World:
        if self.recipe.simulation is not None:
            progress("simulating payments")
            self.generate()
            progress("building feature tables")
            self.build_features()
        self.apply()
        progress("filling the online store as of the cutoff")
        self.materialize()
        outcomes = self.train(progress) if self.recipe.models else []
        tx = self.transactions
        return World(
            self.settings,
            tx,
            Calendar.of(tx["event_timestamp"]),
            self.cutoff(),
            {o.kind: o for o in outcomes[: len(self.recipe.models)]},  # not the comparison
        )
