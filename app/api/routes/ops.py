"""Operations endpoints at the root; never faulted, so the platform can always manage a replica."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from app.api.core.db import current_migration
from app.api.schemas import Health, Readiness, VersionInfo

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Database unreachable or not migrated"}},
)
def readyz(request: Request) -> Readiness | JSONResponse:
    head: str | None = request.app.state.migration_head
    try:
        current = current_migration(request.app.state.engine)
    except SQLAlchemyError as error:
        # The driver message says what failed (refused, timeout, auth) without secrets.
        cause = getattr(error, "orig", None) or error
        reason = f"database unreachable: {type(cause).__name__}"
        return _not_ready(reason)
    if current != head:
        return _not_ready(f"migrations not at head: database at {current}, code expects {head}")
    return Readiness(status="ok", migration=current)


def _not_ready(reason: str) -> JSONResponse:
    body = Readiness(status="unavailable", reason=reason)
    return JSONResponse(status_code=503, content=body.model_dump())


@router.get("/version", response_model=VersionInfo)
async def version(request: Request) -> VersionInfo:
    settings = request.app.state.settings
    return VersionInfo(version=settings.version, git_sha=settings.git_sha, track=settings.track)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    return Response(content=generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
