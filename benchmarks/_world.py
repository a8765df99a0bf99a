"""A benchmark world: simulated payments, feature tables, Feast registry and online
store, and an MLflow registry with a LightGBM champion and a logistic-regression
challenger, all under one home folder. Built once; a folder that already holds one
(see MARKER) is reused as is.

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
    from data.simulator import SimulationConfig
    from pipelines.registry import CHALLENGER, CHAMPION
    from pipelines.world import WorldBuilder, WorldRecipe

    started = time.perf_counter()
    recipe = WorldRecipe(
        SimulationConfig.from_settings(settings.simulation),
        models=("logreg", "lightgbm"),
        aliases={CHAMPION: "lightgbm", CHALLENGER: "logreg"},  # serving's fast path: a Booster
    )
    built = WorldBuilder(settings, recipe).build(progress=say)
    champion, challenger = built.version("lightgbm"), built.version("logreg")
    online_until = built.cutoff
    say(
        f"{len(built.transactions):,} payments; champion lightgbm v{champion}, challenger "
        f"logreg v{challenger}; online store up to {online_until} "
        f"({time.perf_counter() - started:.0f} s)"
    )
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
    materialize(settings, end=world.online_until.to_pydatetime(), payment_state=True)
    say(f"Redis db {db} emptied and loaded ({time.perf_counter() - started:.0f} s)")


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
