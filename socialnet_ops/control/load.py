"""Bounded, open-loop HTTP load against 127.0.0.1: synthetic users for the demo, benchmarks and drills.

The load runs in its own process so the flows being measured do not slow the clients (GIL).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

import httpx


@dataclass(frozen=True)
class Sample:
    started: float  # time.monotonic(), comparable across processes on one machine
    seconds: float
    ok: bool
    status: int  # 0 when no HTTP answer came
    error: str = ""


async def _one(client: httpx.AsyncClient, path: str, samples: list[Sample]) -> None:
    started = time.monotonic()
    try:
        response = await client.get(path)
        sample = Sample(
            started, time.monotonic() - started, response.status_code < 500, response.status_code
        )
    except httpx.HTTPError as error:
        sample = Sample(started, time.monotonic() - started, False, 0, type(error).__name__)
    samples.append(sample)


async def _drive(
    base_url: str, paths: list[str], rate: float, max_seconds: float, stop: Event
) -> list[Sample]:
    samples: list[Sample] = []
    interval = 1.0 / rate
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base_url, timeout=10, limits=limits) as client:
        pending: set[asyncio.Task[None]] = set()
        begin = time.monotonic()
        sent = 0
        while not stop.is_set() and time.monotonic() - begin < max_seconds:
            delay = begin + sent * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(_one(client, paths[sent % len(paths)], samples))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        if pending:
            await asyncio.wait(pending, timeout=15)
    return samples


def _worker(
    base_url: str, paths: list[str], rate: float, max_seconds: float, stop: Event, out: Connection
) -> None:
    out.send(asyncio.run(_drive(base_url, paths, rate, max_seconds, stop)))
    out.close()


@dataclass
class SteadyLoad:
    """`rate` requests per second to `paths` (round robin) until stopped or `max_seconds` pass."""

    base_url: str
    paths: list[str]
    rate: float = 100.0
    max_seconds: float = 600.0
    _context: multiprocessing.context.SpawnContext = field(
        default_factory=lambda: multiprocessing.get_context("spawn")
    )
    _process: multiprocessing.process.BaseProcess | None = None
    _stop: Event | None = None
    _results: Connection | None = None

    def start(self) -> SteadyLoad:
        if not self.base_url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
            raise ValueError(f"load only goes to this machine, not {self.base_url}")
        self._stop = self._context.Event()
        self._results, child_end = self._context.Pipe(duplex=False)
        self._process = self._context.Process(
            target=_worker,
            args=(self.base_url, self.paths, self.rate, self.max_seconds, self._stop, child_end),
            daemon=True,
        )
        self._process.start()
        return self

    def stop(self) -> list[Sample]:
        assert self._process and self._stop and self._results
        self._stop.set()
        samples: list[Sample] = self._results.recv() if self._results.poll(60) else []
        self._process.join(timeout=10)
        return samples


def percentile_ms(samples: list[Sample], quantile: float) -> float:
    durations = sorted(sample.seconds for sample in samples)
    if not durations:
        return 0.0
    index = min(len(durations) - 1, round(quantile * (len(durations) - 1)))
    return round(durations[index] * 1000, 1)
