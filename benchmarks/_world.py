"""A benchmark world: simulated payments, feature tables, Feast registry and online
store, and an MLflow registry with a LightGBM champion and a logistic-regression
challenger, all under one home folder. Built once; a folder that already holds one
(see MARKER) is reused as is. `copied_world` reads a home that `fraudlab demo` filled
instead (its champion, whichever model that is), through a copy of its stores.

`load_redis` copies the same snapshots into a Redis database for the production
profile's online store; the registry stays the world's SQLite MLflow store (it is off
the request path: models load at startup and on alias moves).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fraudlab.settings import Settings

MARKER = "benchmark_world.json"  # written last, so its presence means the world is complete
Say = Callable[[str], None]


@dataclass(frozen=True)
class World:
    settings: Settings
    champion: str  # registry version of the champion (LightGBM in a built world)
    challenger: str | None  # of the challenger (the logistic regression); None: no alias
    online_until: pd.Timestamp  # the online store holds snapshots up to this time


def build_world(settings: Settings, say: Say = print) -> World:
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


def copied_world(source: Settings, into: Path) -> World:
    """The world in the embedded home `source` (the demo's, or a built one), read through
    a copy of its stores in the empty folder `into`: what a benchmark writes (prediction
    log, payment state, Feast's record of what it materialized, a held clock) then never
    reaches it. Copied: the Feast registry, the SQLite online store and MLflow database
    (through SQLite's backup: consistent while another process writes), the payments
    table. Model artifacts stay where they are, read only: the registry names their path.
    `online_until` is the last materialization's end, as Feast's registry records it."""
    from features.definitions import VIEWS
    from features.store import open_store, repo_config_values
    from fraudlab.errors import ConfigError, MissingInput
    from pipelines.registry import CHALLENGER, CHAMPION, alias_version, connect

    if source.profile != "embedded" or source.mlflow_tracking_uri:
        raise ConfigError(f"{source.home}: a world is copied from an embedded home only")
    settings = source.model_copy(update={"home": into})
    feast = repo_config_values(source), repo_config_values(settings)
    copies = [
        (Path(feast[0]["registry"]), Path(feast[1]["registry"])),
        (Path(feast[0]["online_store"]["path"]), Path(feast[1]["online_store"]["path"])),
        (_mlflow_database(source), _mlflow_database(settings)),
        (source.transactions_path, settings.transactions_path),
    ]
    for original, copy in copies:
        if not original.is_file():
            raise MissingInput(
                f"{source.home} holds no demo ({original} is missing): run `make demo` first"
            )
        _copy_file(original, copy)
    client = connect(settings)
    model = settings.training.model_name
    champion = alias_version(client, model, CHAMPION)
    if champion is None:
        raise MissingInput(f"{source.home}: no {CHAMPION} in its registry: train one first")
    store = open_store(settings)
    snapshots = [n for n, spec in VIEWS.items() if spec.online and not spec.pushed]  # daily
    intervals = [store.get_feature_view(n).materialization_intervals for n in snapshots]
    if not all(intervals):
        raise MissingInput(f"{source.home}: its online store was never materialized")
    online_until = pd.Timestamp(min(max(end for _, end in each) for each in intervals))
    return World(settings, champion, alias_version(client, model, CHALLENGER), online_until)


def _mlflow_database(settings: Settings) -> Path:
    """The embedded MLflow database, as the tracking URI names it."""
    return Path(settings.tracking_uri.removeprefix("sqlite:///"))


def _copy_file(original: Path, copy: Path) -> None:
    copy.parent.mkdir(parents=True, exist_ok=True)
    with original.open("rb") as head:
        is_sqlite = head.read(16) == b"SQLite format 3\x00"
    if not is_sqlite:  # Feast's file registry: one protobuf, replaced whole when written
        shutil.copyfile(original, copy)
        return
    # A byte copy of a database another process writes (WAL) could be torn: SQLite's
    # backup is not. Read-write on purpose: a read-only connection to a WAL database
    # leaves its -wal and -shm files behind in the source's folder; this one removes
    # them when it closes, and changes no row.
    with closing(sqlite3.connect(original)) as read, closing(sqlite3.connect(copy)) as write:
        read.backup(write)


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


def load_redis(world: World, settings: Settings, say: Say = print) -> None:
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
