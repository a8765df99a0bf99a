"""The plain way to serve the same model, as the baseline benchmarks/serving.py beats.

What most tutorials do: per request, Feast `get_online_features` on the champion's
feature service, `.to_dict()`, the shared request-time features, a one-row pandas
DataFrame, and MLflow pyfunc `predict` on the champion (loaded once at startup). The
velocity views are not in Feast's online store (they are computed at request time from
the payment-state views), so the plain way reads those state views through
`get_online_features` too and computes the velocity features with the same function
serving uses (features/velocity.py). Same request schema and the same `async def`
route style as serving/app.py, so the difference measured is the feature and model
path, not validation or threading.

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
from features.velocity import STATE_FIELDS, STATE_VIEWS, VELOCITY_OF, VELOCITY_VIEWS, PaymentState
from fraudlab.settings import get_settings
from serving.schemas import ScoreRequest
from serving.velocity_state import micros


def create_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import mlflow
        from mlflow import MlflowClient

        from features.store import open_store
        from pipelines.registry import VersionTags, connect

        settings = get_settings()
        connect(settings)  # points MLflow at the world's registry
        uri = f"models:/{settings.training.model_name}@champion"
        model = mlflow.pyfunc.load_model(uri)
        champion = MlflowClient().get_model_version_by_alias(
            settings.training.model_name, "champion"
        )
        tags = VersionTags.from_tags(champion.version, dict(champion.tags))
        store = open_store(settings)
        views = store.get_feature_service(tags.feature_service).feature_view_projections
        app.state.model = model
        app.state.columns = model.metadata.get_input_schema().input_names()
        app.state.store = store
        app.state.kinds = [VELOCITY_VIEWS[v.name] for v in views if v.name in VELOCITY_VIEWS]
        app.state.refs = [
            f"{v.name}:{f.name}" for v in views if v.name not in VELOCITY_VIEWS for f in v.features
        ] + [f"{STATE_VIEWS[kind]}:{field}" for kind in app.state.kinds for field in STATE_FIELDS]
        yield

    app = FastAPI(title="plain scorer", lifespan=lifespan)

    @app.post("/v1/score")
    async def score(payment: ScoreRequest, request: Request) -> dict[str, Any]:
        state = request.app.state
        online = state.store.get_online_features(
            features=state.refs,
            entity_rows=[{"customer_id": payment.customer_id, "terminal_id": payment.terminal_id}],
            full_feature_names=True,  # both state views name their field `payments`
        ).to_dict()
        row = {k.split("__")[-1]: (np.nan if v[0] is None else v[0]) for k, v in online.items()}
        for kind in state.kinds:
            packed = online[f"{STATE_VIEWS[kind]}__{STATE_FIELDS[0]}"][0]
            payments = PaymentState.unpacked(packed) if packed else PaymentState.empty()
            row.update(VELOCITY_OF[kind](payments, micros(payment.timestamp)))
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
