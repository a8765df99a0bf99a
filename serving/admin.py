"""Admin endpoints: force a model reload, change routing. Bearer token from settings;
401 without a token, 403 with a wrong one, 404 (off) when no token is configured."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.schemas import ReloadResult, RoutingState, RoutingUpdate, ValidationErrorBody

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


def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    token = request.app.state.settings.serving.admin_token
    if not token:
        raise HTTPException(404, "admin endpoints are off: no admin token is configured")
    if credentials is None:
        raise HTTPException(401, "admin token required", headers={"WWW-Authenticate": "Bearer"})
    if not secrets.compare_digest(credentials.credentials.encode(), token.encode()):
        raise HTTPException(403, "wrong admin token")


Admin = Annotated[None, Depends(require_admin)]


@router.post("/reload", response_model=ReloadResult)
def reload(request: Request, _: Admin) -> ReloadResult:
    """Check the registry now and load any alias that moved."""
    return request.app.state.service.reload()


@router.get("/routing", response_model=RoutingState)
def get_routing(request: Request, _: Admin) -> RoutingState:
    policy = request.app.state.service.routing
    return RoutingState(canary_share=policy.canary_share, shadow=policy.shadow)


@router.post("/routing", response_model=RoutingState)
def set_routing(update: RoutingUpdate, request: Request, _: Admin) -> RoutingState:
    policy = request.app.state.service.routing
    if update.canary_share is not None:
        policy.canary_share = update.canary_share
    if update.shadow is not None:
        policy.shadow = update.shadow
    return RoutingState(canary_share=policy.canary_share, shadow=policy.shadow)
