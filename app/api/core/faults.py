"""Fault injection for release tests: OFF unless SOCIALNET_FAULT_* is set. Applied to /api only."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from fastapi import HTTPException, status


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
