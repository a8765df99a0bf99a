"""The FastAPI app: thin routes over serving.service.ScoringService."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fraudlab.errors import ModelUnavailable, PaymentRefused
from fraudlab.settings import Settings, get_settings
from serving.admin import router as admin_router
from serving.limits import BodySizeLimit
from serving.process import WORKER_HEADER
from serving.routing import SharedRouting, shared_routing_path
from serving.schemas import ScoreRequest, ScoreResponse, ValidationErrorBody
from serving.service import ScoringService


def tune_for_latency() -> None:
    """Two interpreter settings that cut the request path's tail, set once at startup.

    gc.freeze(): the hundreds of thousands of objects MLflow, Feast and LightGBM leave
    behind at startup never die; frozen, a full collection no longer walks them (a
    multi-millisecond pause otherwise). A 1 ms switch interval: the shadow scorer and the
    log writer are background threads; with Python's default 5 ms, a request that needs
    the GIL back can wait that long behind them.
    """
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(0.001)


class WorkerHeader:
    """Every response names the worker process that answered (`Fraudlab-Worker: <pid>`):
    with several uvicorn workers, the one way to tell from outside which of them a
    response, a /metrics scrape or an admin change came from. Plain ASGI: one header
    appended, no per-request task or body buffering."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_named(message: Message) -> None:
            if message["type"] == "http.response.start":
                worker = (WORKER_HEADER.encode(), str(os.getpid()).encode())
                message["headers"] = [*message.get("headers", ()), worker]
            await send(message)

        await self.app(scope, receive, send_named)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = ScoringService(settings)
        # Routing others changed before this worker (re)started applies before its
        # first request; later changes on each poll of the alias watcher.
        shared = SharedRouting(shared_routing_path(settings.home), service.routing)
        shared.sync()
        service.models.also_on_poll.append(shared.sync)
        service.start()
        app.state.service = service
        app.state.shared_routing = shared
        tune_for_latency()
        try:
            yield
        finally:
            service.close()
            service.metrics.close()

    # FastAPIOffline: the same FastAPI app, its /docs and /redoc pages loading Swagger UI
    # and ReDoc from files the API serves itself, not from a CDN (a laptop offline, a
    # machine behind a firewall would otherwise get a blank page).
    app = FastAPIOffline(title="fraudlab scoring API", version="1", lifespan=lifespan)
    app.add_middleware(BodySizeLimit, max_bytes=settings.serving.max_body_bytes)
    app.add_middleware(WorkerHeader)
    app.state.settings = settings
    app.state.admin_token = settings.admin_token()
    app.include_router(admin_router)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {
                # a JSON syntax error's loc is a character offset, not a field
                "field": "body"
                if err["type"] == "json_invalid"
                else ".".join(str(p) for p in err["loc"] if p != "body") or "body",
                "message": err["msg"],
            }
            for err in exc.errors()
        ]
        return JSONResponse({"detail": problems}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers a body it cannot decode at all (not UTF-8, not JSON) with a
        # 400; ours is one convention for every bad payload: 422 naming the field.
        if exc.status_code == 400 and request.url.path == "/v1/score":
            problem = {"field": "body", "message": "the body is not valid JSON"}
            return JSONResponse({"detail": [problem]}, status_code=422)
        return JSONResponse(
            {"detail": exc.detail},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(PaymentRefused)
    async def _refused(_: Request, exc: PaymentRefused) -> JSONResponse:
        return JSONResponse({"detail": [{"field": exc.field, "message": str(exc)}]}, 422)

    @app.exception_handler(ModelUnavailable)
    async def _no_model(_: Request, exc: ModelUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.post(
        "/v1/score",
        response_model=ScoreResponse,
        responses={422: {"model": ValidationErrorBody}, 413: {}, 503: {}},
    )
    async def score(payment: ScoreRequest, request: Request) -> Response:
        # On the event loop, not in a thread: a thread hop per request cost a share
        # of saturated throughput (benchmarks/serving.py), and awaiting Redis instead
        # made the loop's own queueing count against the feature budget. What keeps a
        # slow store from holding the loop is the budget (every Redis call times out
        # within it) and the breaker in serving/features.py (after a failure, lookups
        # skip the store for a second instead of each waiting out the timeout). The
        # service builds a validated ScoreResponse; serialising it here skips
        # FastAPI's second validation pass of the same object (~0.1 ms a request).
        answer: ScoreResponse = request.app.state.service.score(payment)
        return Response(answer.model_dump_json(), media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {}})
    async def readyz(request: Request) -> JSONResponse:
        ready, reason, refused = request.app.state.service.ready()
        return JSONResponse(
            {"ready": ready, "reason": reason, "refused": refused},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics(request: Request) -> PlainTextResponse:
        # With several workers: the totals of all of them (serving/metrics.py).
        body = request.app.state.service.metrics.render()
        return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)

    return app
