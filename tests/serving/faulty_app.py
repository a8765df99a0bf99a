"""The real scoring app with a fault faked into one model version, for shadow tests.

There is no way to break a model through the HTTP API, so this test-only factory wraps
the scorer of version $FAULTY_VERSION as the registry loads it, and adds one route to
pick the fault: "slow" (50 ms per score, asleep), "crash" (raises), "nan" (returns NaN),
"gil" (burns about 10 ms of CPU in one C call that never lets the GIL go, as native
code that does not release it would) or "none". The load probe (the first call)
always passes, as a model that breaks only on live rows would.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Literal

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

from serving import app as serving_app
from serving.models import ModelManager
from serving.scoring import Scorer, ServingModel

SLOW_SECONDS = 0.05
GIL_SPIN = 500_000  # sum(range(n)) runs in C without a GIL switch: ~10 ms here


class Fault(BaseModel):
    mode: Literal["none", "slow", "crash", "nan", "gil"]


class FaultyScorer:
    def __init__(self, scorer: Scorer, fault: Fault) -> None:
        self.scorer = scorer
        self.fault = fault
        self.calls = 0

    def __call__(self, row: np.ndarray) -> float:
        self.calls += 1
        if self.calls > 1 and self.fault.mode == "slow":
            time.sleep(SLOW_SECONDS)
        if self.calls > 1 and self.fault.mode == "crash":
            raise RuntimeError("injected shadow model failure")
        if self.calls > 1 and self.fault.mode == "nan":
            return float("nan")
        if self.calls > 1 and self.fault.mode == "gil":
            sum(range(GIL_SPIN))
        return self.scorer(row)


def create_app() -> FastAPI:
    fault = Fault(mode=os.environ.get("SHADOW_FAULT", "none"))  # type: ignore[arg-type]
    faulty_version = os.environ["FAULTY_VERSION"]
    load_from_registry = ModelManager._load_from_registry

    def load_with_fault(self: ModelManager, version: str) -> ServingModel:
        model = load_from_registry(self, version)
        if version != faulty_version:
            return model
        return dataclasses.replace(model, score=FaultyScorer(model.score, fault))

    ModelManager._load_from_registry = load_with_fault  # type: ignore[method-assign]
    app = serving_app.create_app()

    @app.post("/_test/fault")
    def set_fault(update: Fault) -> Fault:
        fault.mode = update.mode
        return fault

    return app
