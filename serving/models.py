"""Models by alias, loaded off the request path and swapped atomically.

The request path reads `manager.current` once per request: an immutable snapshot of
(champion, challenger, and the online-feature client that serves both). A reload builds
the whole next snapshot beside it, client included, and replaces the reference in one
assignment, so a request sees the old snapshot or the new one, never new models with
the old feature list. A version that fails to load, to pass its checks, or to get an
online client is refused and the old snapshot keeps serving. So is an alias lookup
that says the champion is gone: only a cold start with nothing loaded answers 503.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from mlflow import MlflowClient

from fraudlab.settings import Settings
from pipelines.registry import CHALLENGER, CHAMPION, alias_version, connect, load_version
from serving.features import OnlineFeatures
from serving.scoring import ServingModel

log = logging.getLogger(__name__)
ALIASES = (CHAMPION, CHALLENGER)
Loader = Callable[[str], ServingModel]
ServedFeatures = Callable[[str], set[str]]  # feature service -> the names it serves


@dataclass(frozen=True)
class LoadedModels:
    champion: ServingModel | None = None
    challenger: ServingModel | None = None
    online: OnlineFeatures | None = None  # reads exactly what these two models need

    def get(self, alias: str) -> ServingModel | None:
        return self.champion if alias == CHAMPION else self.challenger


class ModelManager:
    def __init__(
        self,
        settings: Settings,
        online_for: Callable[[LoadedModels], OnlineFeatures],
        served_features: ServedFeatures,
        on_swapped: Callable[[LoadedModels], None] = lambda _: None,
        on_refused: Callable[[dict[str, str]], None] = lambda _: None,
    ) -> None:
        self.settings = settings
        self.model_name = settings.training.model_name
        self.current = LoadedModels()
        self.last_errors: dict[str, str] = {}
        self.online_for = online_for  # builds the next snapshot's client, before the swap
        self.on_swapped = on_swapped
        self.served_features = served_features
        self.on_refused = on_refused  # every refresh that failed, the watcher's included
        # Other shared state each worker picks up on the same beat (the routing row):
        # one thread and one period for everything a worker learns from outside.
        self.also_on_poll: list[Callable[[], object]] = []
        self._lock = threading.Lock()  # one reload at a time; readers never take it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: MlflowClient | None = None
        self.load_version: Loader = self._load_from_registry
        # MLflow's HTTP client retries a dead tracking server for ~4 minutes (7 retries,
        # backoff x2, 120 s timeout) while refresh() holds the lock: fail the poll fast
        # instead; the watcher's next poll is the retry. An operator's value wins.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

    def _load_from_registry(self, version: str) -> ServingModel:
        client = connect(self.settings)
        return ServingModel.from_registered(
            self.model_name, load_version(client, self.model_name, version)
        )

    def refresh(self) -> dict[str, str]:
        """Load every alias whose version moved; returns errors per alias (empty if none)."""
        with self._lock:
            errors: dict[str, str] = {}
            try:
                # One client for the watcher's lifetime: connecting per poll held the GIL
                # for ~15 ms every poll, a visible bump in request latency.
                self._client = self._client or connect(self.settings)
                client = self._client
                wanted = {a: alias_version(client, self.model_name, a) for a in ALIASES}
            except Exception as exc:  # registry down: keep serving what we have
                self._client = None
                self.last_errors = {"registry": str(exc)}
                self.on_refused(self.last_errors)
                return self.last_errors
            updated = self.current
            moved: dict[str, str | None] = {}
            for alias, version in wanted.items():
                loaded = updated.get(alias)
                if version == (loaded.version if loaded else None):
                    continue
                if version is None and alias == CHAMPION and loaded is not None:
                    # "Not found" from an empty or wrong backend looks like a deleted
                    # alias; unloading on it would turn every answer into a 503.
                    errors[alias] = f"alias not found in the registry; keeping v{loaded.version}"
                    log.error("champion alias not found; keeping v%s", loaded.version)
                    continue
                try:
                    model = None if version is None else self._checked(version)
                except Exception as exc:  # refuse the version, keep the old one
                    errors[alias] = f"version {version} refused: {exc}"
                    log.error("alias %s -> v%s refused: %s", alias, version, exc)
                    continue
                updated = (
                    replace(updated, champion=model)
                    if alias == CHAMPION
                    else replace(updated, challenger=model)
                )
                moved[alias] = version
            if moved:
                self._swap(updated, moved, errors)
            self.last_errors = errors
            if errors:
                self.on_refused(errors)
            return errors

    def _swap(
        self, updated: LoadedModels, moved: dict[str, str | None], errors: dict[str, str]
    ) -> None:
        try:
            updated = replace(updated, online=self.online_for(updated))
        except Exception as exc:  # no client for the new models: none of them serve
            for alias, version in moved.items():
                errors[alias] = f"version {version} refused: no online features for it: {exc}"
            log.exception("online features for %s could not be built", moved)
            return
        self.current = updated  # the atomic swap: models and their client together
        try:
            self.on_swapped(updated)
        except Exception:  # a gauge update must not undo or hide a done swap
            log.exception("after-swap hook failed")

    def _checked(self, version: str) -> ServingModel:
        model = self.load_version(version)
        check_servable(model, self.served_features(model.feature_service))
        return model

    def start_watching(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="alias-watcher", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.settings.serving.alias_poll_seconds):
            # The cheap local reads first: a registry that takes seconds to answer must
            # not hold back a routing change another worker has already committed.
            for poll in self.also_on_poll:
                try:
                    poll()
                except Exception:
                    log.exception("watcher poll %r failed", poll)
            try:
                self.refresh()
            except Exception:  # the watcher must outlive any one bad poll
                log.exception("alias watcher poll failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def check_servable(model: ServingModel, served: set[str]) -> None:
    """Refuse a version before it can serve: every feature it reads must be one its
    feature service serves (a renamed name would fail every request that builds its
    row), its thresholds must be ordered probabilities, and realistic rows (its input
    example) and an all-missing row must each score a probability."""
    unknown = [name for name in model.features if name not in served]
    if unknown:
        raise ValueError(
            f"features {unknown} are not served by feature service {model.feature_service!r}"
        )
    review, decline = model.review_threshold, model.decline_threshold
    if not 0 <= review <= decline <= 1:  # NaN fails every comparison, infinities the bounds
        raise ValueError(
            f"thresholds must satisfy 0 <= review <= decline <= 1: review {review}, "
            f"decline {decline}"
        )
    probes = [np.full(len(model.features), np.nan)]
    example = model.example
    if example is not None:
        missing = [name for name in model.features if name not in example.columns]
        if missing:
            raise ValueError(f"its input example has no columns {missing}")
        probes += list(example[model.features].to_numpy(dtype=np.float64))
    for row in probes:
        model.probability(row)
