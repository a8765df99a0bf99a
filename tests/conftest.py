"""Shared builders: a small simulated world with a real Feast repository and a real
MLflow store, in temporary folders. Built once per session; tests must not mutate it."""

from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from data.simulator import SimulationConfig, generate
from data.validate import read_transactions
from features.build import build_feature_tables
from features.store import apply_definitions, open_store
from fraudlab.settings import Settings, SimulationSettings, TrainingSettings

warnings.filterwarnings("ignore", category=DeprecationWarning)

# ~150k payments over 75 days: enough known fraud in every period, built in seconds.
TEST_SIMULATION = SimulationSettings(customers=1_000, terminals=2_000, days=75, seed=5)
TEST_TRAINING = TrainingSettings(
    cutoff_day=75,
    warmup_days=10,
    validation_days=12,
    test_days=12,
    gap_days=2,
    label_maturity_days=7,
    bootstrap_rounds=100,
    reference_sample_rows=500,
)


def make_settings(home: Path, **overrides: object) -> Settings:
    return Settings(home=home, simulation=TEST_SIMULATION, training=TEST_TRAINING, **overrides)  # type: ignore[arg-type]


def populate(settings: Settings) -> pd.DataFrame:
    """Generate, build and apply: everything training needs, under settings.home."""
    sim = settings.simulation
    config = SimulationConfig(
        customers=sim.customers,
        terminals=sim.terminals,
        days=sim.days,
        seed=sim.seed,
        start_date=date.fromisoformat(sim.start_date),
    )
    generate(config, settings.transactions_path)
    tx = read_transactions(settings.transactions_path)
    build_feature_tables(tx, settings.feature_data_dir)
    apply_definitions(settings)
    return tx


@dataclass(frozen=True)
class World:
    settings: Settings
    transactions: pd.DataFrame


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    settings = make_settings(tmp_path_factory.mktemp("world"))
    return World(settings, populate(settings))


@pytest.fixture(scope="session")
def store(world: World):
    return open_store(world.settings)


def reachable(address: tuple[str, int]) -> bool:
    """Does something accept TCP connections there (a local PostgreSQL, Redis)?"""
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


def services_required() -> bool:
    return os.environ.get("FRAUDLAB_REQUIRE_SERVICES", "") not in ("", "0", "false")
