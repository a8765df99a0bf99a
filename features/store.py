"""Opening the Feast repository with the locations and online store the settings pick.

features/repo/feature_store.yaml reads its locations from FRAUDLAB_FEAST_* variables;
this module is the one place that sets them, from fraudlab.settings.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from fraudlab.errors import FeatureServiceNotFound, MissingInput, ServiceUnavailable
from fraudlab.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

REPO_DIR = Path(__file__).parent / "repo"


def feast_environment(settings: Settings) -> dict[str, str]:
    """The variables feature_store.yaml expands, for this profile."""
    env = {"FRAUDLAB_FEAST_REGISTRY": str(settings.feast_dir / "registry.db")}
    if settings.online_store_type == "redis":
        env |= {
            "FRAUDLAB_FEAST_ONLINE_TYPE": "redis",
            "FRAUDLAB_FEAST_ONLINE_KEY": "connection_string",
            "FRAUDLAB_FEAST_ONLINE_VALUE": settings.redis_connection,
        }
    else:
        env |= {
            "FRAUDLAB_FEAST_ONLINE_TYPE": "sqlite",
            "FRAUDLAB_FEAST_ONLINE_KEY": "path",
            "FRAUDLAB_FEAST_ONLINE_VALUE": str(settings.feast_dir / "online.db"),
        }
    # Feature table paths are read by the definitions through get_settings(); home
    # is exported too so a `feast` CLI started from this process sees the same files.
    env["FRAUDLAB_HOME"] = str(settings.home)
    return env


def open_store(settings: Settings) -> FeatureStore:
    from feast import FeatureStore

    os.environ.update(feast_environment(settings))
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(REPO_DIR))


def apply_definitions(settings: Settings) -> list[str]:
    """`feast apply`: register entities, views and services; returns their names."""
    from features.repo.definitions import define

    store = open_store(settings)
    objects = define(settings.feature_data_dir).objects
    store.apply(objects)
    return [obj.name for obj in objects]


def feature_service(store: FeatureStore, name: str) -> FeatureService:
    from features.repo.definitions import FEATURE_SERVICE_NAMES

    if name not in FEATURE_SERVICE_NAMES:
        raise FeatureServiceNotFound(
            f"unknown feature service {name!r}; defined: {', '.join(FEATURE_SERVICE_NAMES)}"
        )
    try:
        return store.get_feature_service(name)
    except Exception as exc:  # feast raises its own not-found error type per registry
        raise MissingInput(
            f"feature service {name!r} is not registered yet: run `fraudlab features apply`"
        ) from exc


def materialize(settings: Settings, end: datetime, start: datetime | None = None) -> None:
    """Copy the latest snapshot per entity in [start, end] into the online store.

    Snapshots are daily and dense (every entity, every midnight), so the default
    window of one snapshot TTL before `end` always holds each entity's latest row.
    Feast's own `materialize_incremental` measures its first window from the wall
    clock, which would skip a simulated history entirely.
    """
    from features.repo.definitions import SNAPSHOT_TTL

    store = open_store(settings)
    try:
        store.materialize(start_date=start or end - SNAPSHOT_TTL, end_date=end)
    except ConnectionError as exc:
        raise ServiceUnavailable(f"online store unreachable: {exc}") from exc
