"""A benchmark world: simulated payments, feature tables, Feast registry and online
store, and an MLflow registry with a LightGBM champion and a logistic-regression
challenger, all under one home folder. Built once; a folder that already holds one
(see MARKER) is reused as is.

Set FRAUDLAB_HOME to the folder before importing fraudlab modules: the Feast
definitions read their table paths through get_settings() at import.

`load_redis` copies the same snapshots into a Redis database for the production
profile's online store; the registry stays the world's SQLite MLflow store (it is off
the request path: models load at startup and on alias moves).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pandas as pd

from fraudlab.settings import Settings

MARKER = "benchmark_world.json"  # written last, so its presence means the world is complete
SERVICE = "fraud_v2"


@dataclass(frozen=True)
class World:
    settings: Settings
    champion: str  # registry version of the LightGBM model
    challenger: str  # registry version of the logistic regression
    online_until: pd.Timestamp  # the online store holds snapshots up to this time


def build_world(settings: Settings, say=print) -> World:
    """Reuse the world under settings.home, or build it there."""
    marker = settings.home / MARKER
    if marker.exists():
        facts = json.loads(marker.read_text())
        say(f"reusing the benchmark world in {settings.home}")
        return World(
            settings, facts["champion"], facts["challenger"], pd.Timestamp(facts["online_until"])
        )
    from data.simulator import SimulationConfig, generate
    from data.validate import read_transactions
    from features.build import build_feature_tables
    from features.store import apply_definitions, materialize
    from pipelines.registry import CHALLENGER, CHAMPION, connect, set_alias
    from pipelines.train import run_training

    started = time.perf_counter()
    summary = generate(
        SimulationConfig.from_settings(settings.simulation), settings.transactions_path
    )
    say(f"simulated {summary.rows:,} payments ({time.perf_counter() - started:.0f} s)")
    tx = read_transactions(settings.transactions_path)
    build_feature_tables(tx, settings.feature_data_dir)
    apply_definitions(settings)
    say(f"feature tables built and applied ({time.perf_counter() - started:.0f} s)")
    outcomes = {o.kind: o for o in run_training(settings, ["logreg", "lightgbm"], SERVICE)}
    client = connect(settings)
    name = settings.training.model_name
    champion, challenger = outcomes["lightgbm"].version, outcomes["logreg"].version
    set_alias(client, name, CHAMPION, champion)  # serving's fast path is the Booster
    set_alias(client, name, CHALLENGER, challenger)
    say(f"trained: champion lightgbm v{champion}, challenger logreg v{challenger}")
    online_until = _day0(tx) + pd.Timedelta(days=settings.training.cutoff_day)
    materialize(settings, end=online_until.to_pydatetime())
    say(f"materialized up to {online_until} ({time.perf_counter() - started:.0f} s in all)")
    marker.write_text(
        json.dumps(
            {"champion": champion, "challenger": challenger, "online_until": str(online_until)}
        )
    )
    return World(settings, champion, challenger, online_until)


def production_settings(world: World, redis_connection: str) -> Settings:
    """The world with Feast's online store on Redis (`host:port,db=N`)."""
    return world.settings.model_copy(
        update={
            "profile": "production",
            "redis_connection": redis_connection,
            "mlflow_tracking_uri": world.settings.tracking_uri,
        }
    )


def production_env(settings: Settings) -> dict[str, str]:
    """The FRAUDLAB_* variables a server needs to run on `production_settings`."""
    return {
        "FRAUDLAB_HOME": str(settings.home),
        "FRAUDLAB_PROFILE": settings.profile,
        "FRAUDLAB_REDIS_CONNECTION": settings.redis_connection,
        "FRAUDLAB_MLFLOW_TRACKING_URI": settings.tracking_uri,
    }


def load_redis(world: World, settings: Settings, say=print) -> None:
    """Empty only the Redis database `settings` names, then materialize the world's
    snapshots into it, up to the same time as the SQLite online store."""
    import redis

    from features.store import materialize

    address, *options = settings.redis_connection.split(",")
    host, port = address.rsplit(":", 1)
    db = int(dict(option.split("=", 1) for option in options).get("db", 0))
    redis.Redis(host=host, port=int(port), db=db).flushdb()
    started = time.perf_counter()
    materialize(settings, end=world.online_until.to_pydatetime())
    say(f"Redis db {db} emptied and loaded ({time.perf_counter() - started:.0f} s)")


def _day0(tx: pd.DataFrame) -> pd.Timestamp:
    return tx["event_timestamp"].min().floor("D")


def payloads(world: World, count: int) -> list[dict[str, object]]:
    """Request bodies of the first `count` payments after the cutoff: the "future" the
    models never saw, within one day of the materialized snapshot so features are fresh."""
    tx = pd.read_parquet(
        world.settings.transactions_path,
        columns=["transaction_id", "event_timestamp", "customer_id", "terminal_id", "amount"],
    )
    start = world.online_until
    window = tx[
        (tx["event_timestamp"] >= start) & (tx["event_timestamp"] < start + pd.Timedelta(days=1))
    ]
    window = window.sort_values("event_timestamp").head(count)
    return [
        {
            "transaction_id": str(row.transaction_id),
            "customer_id": int(row.customer_id),
            "terminal_id": int(row.terminal_id),
            "amount": float(row.amount),
            "timestamp": row.event_timestamp.isoformat(),
        }
        for row in window.itertuples(index=False)
    ]
