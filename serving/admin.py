"""Admin endpoints: force a model reload, change routing (canary share, shadow, the
circuit breaker), hold the service clock.
Bearer token from settings (or the home's token file, `Settings.admin_token`), read
once at startup; 401 without
a token, 403 with a wrong one, 404 (off) when no token is configured.

With several uvicorn workers a call reaches one of them. A routing change is committed
to the shared routing row (serving/routing.py) before the answer, applied by this worker
at once and by the others on their watcher's next poll; a reload loads here at once and
the others' watchers find the moved alias on their next poll; a held clock is a file
every worker checks on each request, so it applies everywhere before the answer. The
answer's
`Fraudlab-Propagation` header says so; the bodies are the same as with one worker.
"""

from __future__ import annotations

import os
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.clock import ServiceClock
from serving.routing import RoutingPolicy
from serving.schemas import (
    ClockState,
    ClockUpdate,
    ReloadResult,
    RoutingState,
    RoutingUpdate,
    ValidationErrorBody,
)

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    responses={
        401: {"description": "no bearer token"},
        403: {"description": "wrong token"},
        404: {"description": "admin endpoints are off (no token configured)"},
        422: {"model": ValidationErrorBody},
    },
)
_bearer = HTTPBearer(auto_error=False)
PROPAGATION_HEADER = "Fraudlab-Propagation"
_PROPAGATES: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            PROPAGATION_HEADER: {
                "description": "which worker applied the change now, and when the others do",
                "schema": {"type": "string"},
            }
        }
    }
}


def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    token = request.app.state.admin_token
    if not token:
        raise HTTPException(404, "admin endpoints are off: no admin token is configured")
    if credentials is None:
        raise HTTPException(401, "admin token required", headers={"WWW-Authenticate": "Bearer"})
    if not secrets.compare_digest(credentials.credentials.encode(), token.encode()):
        raise HTTPException(403, "wrong admin token")


Admin = Annotated[None, Depends(require_admin)]


def _propagation(request: Request, response: Response, change: str) -> None:
    poll = request.app.state.settings.serving.alias_poll_seconds
    response.headers[PROPAGATION_HEADER] = (
        f"{change} by worker {os.getpid()} now; "
        f"by the server's other workers within one alias poll ({poll:g} s)"
    )


@router.post("/reload", response_model=ReloadResult, responses=_PROPAGATES)
def reload(request: Request, response: Response, _: Admin) -> ReloadResult:
    """Check the registry now and load any alias that moved (this worker; the others'
    watchers find the move on their next poll)."""
    _propagation(request, response, "registry checked")
    return request.app.state.service.reload()


@router.get("/routing", response_model=RoutingState)
def get_routing(request: Request, _: Admin) -> RoutingState:
    """The server's routing: the shared row, which this worker applies on the way."""
    policy = request.app.state.shared_routing.sync()
    return _routing_state(policy)


@router.post("/routing", response_model=RoutingState, responses=_PROPAGATES)
def set_routing(
    update: RoutingUpdate, request: Request, response: Response, _: Admin
) -> RoutingState:
    """Change the canary share, shadow mode or circuit breaker; committed before this
    answers."""
    policy = request.app.state.shared_routing.update(
        update.canary_share, update.shadow, update.breaker
    )
    _propagation(request, response, "routing applied")
    return _routing_state(policy)


def _routing_state(policy: RoutingPolicy) -> RoutingState:
    return RoutingState(
        canary_share=policy.canary_share, shadow=policy.shadow, breaker=policy.breaker
    )


def _clock_state(clock: ServiceClock) -> ClockState:
    reading = clock.read()
    return ClockState(
        now=reading.now,
        held=reading.held,
        max_lead_seconds=clock.max_lead.total_seconds(),
        max_lateness_seconds=clock.max_lateness.total_seconds(),
    )


@router.get("/clock", response_model=ClockState)
def get_clock(request: Request, _: Admin) -> ClockState:
    """The service clock payments are checked against, and the skew it accepts."""
    return _clock_state(request.app.state.service.clock)


@router.put("/clock", response_model=ClockState)
def hold_clock(update: ClockUpdate, request: Request, _: Admin) -> ClockState:
    """Hold the clock at a simulated instant (every worker, before this answers): what
    a simulated-time run does as its payments advance, instead of any check being off."""
    clock: ServiceClock = request.app.state.service.clock
    clock.hold(update.now)
    return _clock_state(clock)


@router.delete("/clock", response_model=ClockState)
def release_clock(request: Request, _: Admin) -> ClockState:
    """Back to the wall clock."""
    clock: ServiceClock = request.app.state.service.clock
    clock.release()
    return _clock_state(clock)
