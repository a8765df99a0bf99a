"""The framework's ceiling for benchmarks/serving.py: the same route, request schema and
uvicorn settings as serving/app.py, and no work at all behind them. FastAPI still reads
the body into `ScoreRequest` and writes a JSON answer, which every scoring request pays
for too; the saturated throughput here is the most one worker can answer, and ours over
it says how much of a request is the scoring path itself.

Run: python -m uvicorn benchmarks._empty_app:create_app --factory.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from serving.schemas import ScoreRequest


def create_app() -> FastAPI:
    app = FastAPI(title="empty endpoint")
    answer = {"score": 0.0, "decision": "approve", "route": "champion", "fallback": False}

    @app.post("/v1/score")
    async def score(payment: ScoreRequest) -> dict[str, Any]:
        return answer | {"transaction_id": payment.transaction_id}

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    return app
