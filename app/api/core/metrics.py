"""Prometheus metrics: requests by route template (never the raw path), latency, pool gauges."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.pool import QueuePool
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED_ROUTE = "<unmatched>"


class HttpMetrics:
    """One registry per application instance, so several apps can live in one test process."""

    def __init__(self, version: str, track: str) -> None:
        self.registry = CollectorRegistry()
        self.version = version
        self.track = track
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by route template.",
            ["route", "method", "status", "version", "track"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["route", "method", "version", "track"],
            registry=self.registry,
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status), self.version, self.track).inc()
        self.duration.labels(route, method, self.version, self.track).observe(seconds)


class DatabasePoolCollector(Collector):
    """Reads the SQLAlchemy pool at scrape time."""

    def __init__(self, engine: Engine, version: str, track: str) -> None:
        self.engine = engine
        self.label_values = [version, track]

    def collect(self) -> Iterator[Metric]:
        pool = self.engine.pool
        if not isinstance(pool, QueuePool):
            return
        for name, documentation, value in (
            ("db_pool_size", "Connections the pool keeps open.", pool.size()),
            ("db_pool_checked_out", "Connections in use by requests.", pool.checkedout()),
            ("db_pool_checked_in", "Idle connections in the pool.", pool.checkedin()),
            ("db_pool_overflow", "Connections open beyond the pool size.", pool.overflow()),
        ):
            gauge = GaugeMetricFamily(name, documentation, labels=["version", "track"])
            gauge.add_metric(self.label_values, value)
            yield gauge


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    if isinstance(route, Mount):
        return f"{route.path}/{{path}}"
    return getattr(route, "path", None) or UNMATCHED_ROUTE


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware) to keep the per-request overhead small."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # An exception escaping the app becomes a 500 in the server error middleware outside us.
        status = 500

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            # The router fills scope["route"] in place, so the template is known afterwards.
            self.metrics.observe(
                route_template(scope), scope["method"], status, time.perf_counter() - started
            )
