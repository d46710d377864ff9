"""Prometheus metrics: requests by route template (never the raw path), latency, pool gauges,
and the database queries the application runs (by operation and main table)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.pool import QueuePool
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.core.statements import classify

UNMATCHED_ROUTE = "<unmatched>"
OTHER_TABLE = "other"
# Queries answer in milliseconds; a slow one (a lost index, a lock) in hundreds of them.
QUERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Where a statement's start is kept between before_ and after_cursor_execute. One DBAPI connection
# runs one statement at a time, so one slot in its info dictionary is enough.
_QUERY_IN_FLIGHT = "socialnet_query_in_flight"


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


class QueryMetrics:
    """Counts and times every statement the engine sends, by operation and main table.

    Labels stay bounded: operation is SELECT/INSERT/UPDATE/DELETE/OTHER and table is one of the
    application's tables or `other`. An error is counted when the statement fails while
    executing (constraint violation, timeout, lost connection); its duration is observed too.
    """

    def __init__(
        self, registry: CollectorRegistry, version: str, track: str, tables: Iterable[str]
    ) -> None:
        self.version = version
        self.track = track
        self.tables = frozenset(tables)
        self.queries = Counter(
            "db_queries",
            "Database statements executed, by operation, main table and outcome.",
            ["operation", "table", "status", "version", "track"],
            registry=registry,
        )
        self.duration = Histogram(
            "db_query_duration_seconds",
            "Time to execute a database statement, by operation and main table.",
            ["operation", "table", "version", "track"],
            registry=registry,
            buckets=QUERY_BUCKETS,
        )
        # (operation, table) -> (ok counter, error counter, histogram): labels() takes a lock and
        # builds a key on every call; the children are resolved once per label set instead.
        self._children: dict[tuple[str, str], tuple[Any, Any, Any]] = {}

    def labels_of(self, statement: str) -> tuple[str, str]:
        operation, table = classify(statement)
        return operation, table if table in self.tables else OTHER_TABLE

    def _children_of(self, labels: tuple[str, str]) -> tuple[Any, Any, Any]:
        children = self._children.get(labels)
        if children is None:
            operation, table = labels
            children = (
                self.queries.labels(operation, table, "ok", self.version, self.track),
                self.queries.labels(operation, table, "error", self.version, self.track),
                self.duration.labels(operation, table, self.version, self.track),
            )
            self._children[labels] = children
        return children

    def observe(self, labels: tuple[str, str], seconds: float, *, ok: bool) -> None:
        ok_counter, error_counter, histogram = self._children_of(labels)
        (ok_counter if ok else error_counter).inc()
        histogram.observe(seconds)

    def instrument(self, engine: Engine) -> None:
        """Listens to the engine's statements; registered first so the timing includes the work
        other before_cursor_execute listeners do (the slow-query fault)."""
        event.listen(engine, "before_cursor_execute", self._before, insert=True)
        event.listen(engine, "after_cursor_execute", self._after)
        event.listen(engine, "handle_error", self._failed)

    def _before(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        conn.info[_QUERY_IN_FLIGHT] = (self.labels_of(statement), time.perf_counter())

    def _after(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        in_flight = conn.info.pop(_QUERY_IN_FLIGHT, None)
        if in_flight is not None:
            labels, started = in_flight
            self.observe(labels, time.perf_counter() - started, ok=True)

    def _failed(self, context: ExceptionContext) -> None:
        # Errors outside a statement's execution (connecting, fetching rows) have nothing in
        # flight and are not query errors.
        conn = context.connection
        if conn is None:
            return
        try:
            in_flight = conn.info.pop(_QUERY_IN_FLIGHT, None)
        except Exception:  # a closed connection has no info; never mask the error
            return
        if in_flight is not None:
            labels, started = in_flight
            self.observe(labels, time.perf_counter() - started, ok=False)


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
