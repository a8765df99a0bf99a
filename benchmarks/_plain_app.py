"""The plain way to serve the same model, as the baseline benchmarks/serving.py beats.

What most tutorials do: per request, Feast `get_online_features` on the feature
service, `.to_dict()`, the shared request-time features, a one-row pandas DataFrame,
and MLflow pyfunc `predict` on the champion (loaded once at startup). Same request
schema and the same `async def` route style as serving/app.py, so the difference
measured is the feature and model path, not validation or threading.

Run: python -m uvicorn benchmarks._plain_app:create_app --factory (FRAUDLAB_HOME set).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request

from features.transforms import request_features
from fraudlab.settings import get_settings
from serving.schemas import ScoreRequest

SERVICE = "fraud_v2"


def create_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import mlflow

        from features.store import open_store
        from pipelines.registry import connect

        settings = get_settings()
        connect(settings)  # points MLflow at the world's registry
        model = mlflow.pyfunc.load_model(f"models:/{settings.training.model_name}@champion")
        store = open_store(settings)
        app.state.model = model
        app.state.columns = model.metadata.get_input_schema().input_names()
        app.state.store = store
        app.state.service = store.get_feature_service(SERVICE)
        yield

    app = FastAPI(title="plain scorer", lifespan=lifespan)

    @app.post("/v1/score")
    async def score(payment: ScoreRequest, request: Request) -> dict[str, Any]:
        state = request.app.state
        online = state.store.get_online_features(
            features=state.service,
            entity_rows=[{"customer_id": payment.customer_id, "terminal_id": payment.terminal_id}],
        ).to_dict()
        row = {k: (np.nan if v[0] is None else v[0]) for k, v in online.items()}
        computed = request_features(
            np.array([payment.amount]),
            np.array([int(payment.timestamp.timestamp())]),
            np.array([row.get("customer_mean_amount_30d", np.nan)], dtype=np.float64),
        )
        row.update({name: column[0] for name, column in computed.items()})
        frame = pd.DataFrame([row])[state.columns].astype("float64")
        fraud_score = float(np.asarray(state.model.predict(frame)).ravel()[0])
        return {"transaction_id": payment.transaction_id, "score": fraud_score}

    @app.get("/readyz")
    async def readyz() -> dict[str, bool]:
        return {"ready": True}

    return app
