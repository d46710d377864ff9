"""Fault injection for release tests: OFF unless SOCIALNET_FAULT_* is set.

The error rate and the latency apply to /api requests; the slow query slows the database itself
(every SELECT on one table), which the operations endpoints never read.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, status
from sqlalchemy import Connection, Engine, event

from app.api.core.statements import classify


@dataclass
class FaultInjector:
    error_rate: float = 0.0
    latency_ms: int = 0
    rng: random.Random = field(default_factory=random.Random)

    @property
    def enabled(self) -> bool:
        return self.error_rate > 0 or self.latency_ms > 0

    async def apply(self) -> None:
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000)
        if self.error_rate > 0 and self.rng.random() < self.error_rate:
            raise HTTPException(
                status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
                detail="injected fault (SOCIALNET_FAULT_ERROR_RATE)",
            )


@dataclass(frozen=True)
class SlowQueryFault:
    """SOCIALNET_FAULT_SLOW_QUERY=`<table>:<ms>`: every SELECT whose main table is `<table>` first
    runs `SELECT pg_sleep(<ms>/1000)` on the same connection, a real database-side slowdown (it
    holds the connection, and shows in pg_stat_statements)."""

    table: str
    delay_ms: int

    @classmethod
    def parse(cls, setting: str, tables: Iterable[str]) -> SlowQueryFault | None:
        """None when unset or 0 ms; ValueError for a malformed value or a table the app lacks."""
        if not setting:
            return None
        table, separator, delay = setting.partition(":")
        if not separator or not delay.isdigit():
            raise ValueError(f"SOCIALNET_FAULT_SLOW_QUERY must be <table>:<ms>, got {setting!r}")
        known = sorted(tables)
        if table not in known:
            raise ValueError(
                f"SOCIALNET_FAULT_SLOW_QUERY: unknown table {table!r} (one of {', '.join(known)})"
            )
        delay_ms = int(delay)
        return cls(table=table, delay_ms=delay_ms) if delay_ms > 0 else None

    def install(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", self._slow_down)

    def _slow_down(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        if classify(statement) == ("SELECT", self.table):
            # On the DBAPI cursor: no SQLAlchemy events, the statement's own result is unaffected.
            cursor.execute("SELECT pg_sleep(%s)", (self.delay_ms / 1000,))
