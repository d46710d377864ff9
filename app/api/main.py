"""Assembles the application: settings, database, security, routes, metrics, the static front."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app.api.core.config import Settings
from app.api.core.db import create_db_engine, create_session_factory, migration_head
from app.api.core.errors import database_unavailable, http_error, validation_failed
from app.api.core.faults import FaultInjector, SlowQueryFault
from app.api.core.headers import SecurityHeaders
from app.api.core.login_throttle import LoginThrottle
from app.api.core.metrics import DatabasePoolCollector, HttpMetrics, MetricsMiddleware, QueryMetrics
from app.api.core.security import TokenSigner
from app.api.deps import inject_faults
from app.api.models import Base
from app.api.routes import auth, ops, posts, timeline, users


class SocialnetAPI(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        # Around Starlette's own outermost middleware, whose 500s would otherwise go without.
        return SecurityHeaders(super().build_middleware_stack())


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    tables = frozenset(Base.metadata.tables)
    # Parsed before the engine exists: a bad value fails start-up, not the first query.
    slow_query_fault = SlowQueryFault.parse(settings.fault_slow_query, tables)
    engine = create_db_engine(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = SocialnetAPI(title="socialnet API", version=settings.version, lifespan=lifespan)
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = create_session_factory(engine)
    app.state.token_signer = TokenSigner(
        keys=tuple(settings.token_signing_keys()), ttl_s=settings.token_ttl_s
    )
    app.state.login_throttle = LoginThrottle(
        per_account=settings.login_failures_per_account,
        per_address=settings.login_failures_per_address,
        window_s=settings.login_failure_window_s,
    )
    app.state.migration_head = migration_head()
    app.state.fault_injector = FaultInjector(
        error_rate=settings.fault_error_rate, latency_ms=settings.fault_latency_ms
    )
    metrics = HttpMetrics(version=settings.version, track=settings.track)
    metrics.registry.register(DatabasePoolCollector(engine, settings.version, settings.track))
    app.state.metrics = metrics
    # Metrics first: a query's duration includes what the fault adds before it.
    QueryMetrics(metrics.registry, settings.version, settings.track, tables).instrument(engine)
    if slow_query_fault is not None:
        slow_query_fault.install(engine)

    app.include_router(ops.router)
    for resource in (auth, users, posts, timeline):
        app.include_router(resource.router, dependencies=[Depends(inject_faults)])

    app.add_exception_handler(RequestValidationError, validation_failed)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(OperationalError, database_unavailable)
    app.add_exception_handler(PoolTimeoutError, database_unavailable)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    # The client is the peer unless the peer is a trusted proxy; then X-Forwarded-For names it
    # (uvicorn does the same for loopback peers before the app; this makes the edge configurable).
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)

    # Mounted last: "/" would otherwise shadow every API route.
    if settings.front_dir is not None:
        app.mount("/", StaticFiles(directory=settings.front_dir, html=True), name="front")
    return app


app = create_app()
