"""Builders for the monitoring tests: a registry with a champion and a challenger
trained on the shared world, and prediction logs of the "future" days written the way
serving writes them (same schema, same feature vector, same scorers), so a month of
traffic takes seconds instead of a month of HTTP.

Faults are injected where serving would make them: a test changes the feature columns
of the frame before `write_log`, i.e. the values serving logged and scored (a unit
change, a different default). tests/serving checks the real server logs such rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data.calendar import Calendar
from features.store import open_store
from fraudlab.settings import Settings
from pipelines.registry import CHALLENGER, CHAMPION, connect, load_version
from pipelines.training_set import TimeSplit, build_training_frame
from pipelines.world import WorldBuilder, WorldRecipe
from serving.prediction_log import PredictionRecord, ShadowRecord, write_records
from serving.routing import RoutingPolicy
from serving.scoring import ServingModel
from tests.conftest import World

MONITOR_CUTOFF_DAY = 55  # train before day 55; days 55..75 are live traffic
Corruption = Callable[[pd.DataFrame], pd.DataFrame]


@dataclass(frozen=True)
class MonitorWorld:
    settings: Settings  # own MLflow store and prediction log; the world's data
    day0: pd.Timestamp
    champion: ServingModel
    challenger: ServingModel

    def day(self, n: float) -> pd.Timestamp:
        return self.day0 + pd.Timedelta(days=n)


@pytest.fixture(scope="session")
def monitor_world(world: World, tmp_path_factory: pytest.TempPathFactory) -> MonitorWorld:
    home = tmp_path_factory.mktemp("monitor")
    for sub in ("data", "feature_data", "feast"):
        (home / sub).symlink_to(world.settings.home / sub)
    settings = world.settings.model_copy(update={"home": home})
    recipe = WorldRecipe(
        models=("logreg", "lightgbm"),
        cutoff_day=MONITOR_CUTOFF_DAY,
        aliases={CHAMPION: "logreg", CHALLENGER: "lightgbm"},
    )
    # Only the models: the Feast repository is the shared world's (linked, not refilled).
    outcomes = WorldBuilder(settings, recipe).train()
    versions = {o.kind: o.version for o in outcomes}
    client = connect(settings)
    name = settings.training.model_name
    models = {
        kind: ServingModel.from_registered(name, load_version(client, name, v))
        for kind, v in versions.items()
    }
    day0 = Calendar.of(world.transactions["event_timestamp"]).day0
    return MonitorWorld(settings, day0, models["logreg"], models["lightgbm"])


def served_features(world: World, since: pd.Timestamp, until: pd.Timestamp) -> pd.DataFrame:
    """The payments of [since, until) with the features serving computes for them:
    the snapshot of their own midnight (a daily materialization) and the shared
    request-time function, i.e. the point-in-time training frame of those days."""
    tx = world.transactions
    split = TimeSplit(
        train_start=since,
        validation_start=since,
        test_start=since,
        test_end=until,
        cutoff=until,
        gap=pd.Timedelta(0),
    )
    frame = build_training_frame(open_store(world.settings), tx, split, "fraud_v2")
    return frame[frame["period"] == "test"].reset_index(drop=True)


def write_log(
    path: Path,
    frame: pd.DataFrame,
    champion: ServingModel,
    challenger: ServingModel | None = None,
    canary_share: float = 0.0,
    shadow: bool = False,
) -> int:
    """Score and log `frame` as the server would; returns rows written."""
    policy = RoutingPolicy(canary_share=canary_share, shadow=shadow)
    names = sorted(set(champion.features) | set(challenger.features if challenger else []))
    rows: list[PredictionRecord | ShadowRecord] = []
    for record in frame.to_dict("records"):
        route = policy.route(int(record["customer_id"]), challenger is not None)
        model = challenger if route == "canary" else champion
        assert model is not None
        vector = {n: float(record[n]) for n in names}
        score = model.score(np.array([vector[n] for n in model.features]))
        request_id = uuid.uuid4().hex
        rows.append(_log_row(record, request_id, route, model, score, champion, challenger, vector))
        if shadow and challenger is not None and route == "champion":
            s = challenger.score(np.array([vector[n] for n in challenger.features]))
            rows.append(
                ShadowRecord(request_id, challenger.version, s, challenger.decide(s), None, 0.02)
            )
    write_records(path, rows)
    return sum(isinstance(r, PredictionRecord) for r in rows)


def _log_row(
    record: dict,
    request_id: str,
    route: str,
    model: ServingModel,
    score: float,
    champion: ServingModel,
    challenger: ServingModel | None,
    vector: dict[str, float],
) -> PredictionRecord:
    return PredictionRecord(
        request_id=request_id,
        transaction_id=str(record["transaction_id"]),
        event_timestamp=record["event_timestamp"],
        served_at=record["event_timestamp"],  # a simulated day: served as it happened
        customer_id=int(record["customer_id"]),
        terminal_id=int(record["terminal_id"]),
        amount=float(record.get("request_amount", record["amount"])),  # what the caller sent
        route=route,
        model_alias=CHALLENGER if route == "canary" else CHAMPION,
        model_version=model.version,
        score=score,
        decision=model.decide(score),
        model_decision=model.decide(score),
        champion_version=champion.version,
        challenger_version=challenger.version if challenger else None,
        fallback_features=[],
        features=vector,
        features_ms=0.3,
        model_ms=0.05,
        total_ms=1.0,
        logged_at=0.0,
    )


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "prediction_log.sqlite"
