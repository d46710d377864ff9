"""User traffic for canary tests and the blast-radius benchmark: bounded, loopback only.

Workers read a user profile through the edge (`GET /api/users/<name>`: a user route, faulted in
bad builds, one database query) at a steady total rate. Each answer is recorded with the slot
that served it (HAProxy's `X-Socialnet-Server`: stableN / canaryN).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

USERNAME = "canary_probe"


@dataclass(frozen=True)
class Answer:
    at: float  # time.time() when the request was sent
    status: int  # 0: no HTTP answer (connection error, timeout)
    track: str  # "stable", "canary" or "" when unknown
    seconds: float

    @property
    def failed(self) -> bool:
        return self.status == 0 or self.status >= 500


@dataclass
class TrafficReport:
    answers: list[Answer] = field(default_factory=list)

    def between(self, start: float, end: float) -> list[Answer]:
        return [answer for answer in self.answers if start <= answer.at < end]

    def failed(self, start: float = 0.0, end: float = float("inf")) -> int:
        return sum(answer.failed for answer in self.between(start, end))

    def tracks(self) -> Counter[str]:
        return Counter(answer.track for answer in self.answers)

    @property
    def total(self) -> int:
        return len(self.answers)


def _loopback_only(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in {"127.0.0.1", "::1", "localhost"}:
        raise ValueError(f"test traffic goes to loopback only, not to {host!r}")


def ensure_probe_user(edge_url: str) -> str:
    """The user whose profile the traffic reads (created once; 409 means it exists)."""
    _loopback_only(edge_url)
    with httpx.Client(base_url=edge_url, timeout=10) as client:
        answer = client.post(
            "/api/users",
            json={"username": USERNAME, "password": secrets.token_urlsafe(16)},
        )
        if answer.status_code not in {201, 409}:
            raise RuntimeError(f"cannot create the probe user: {answer.status_code} {answer.text}")
    return USERNAME


def track_of(server: str | None) -> str:
    if not server:
        return ""
    return "canary" if server.startswith("canary") else "stable"


class UserTraffic:
    """`rate` requests per second over `workers` threads, at most `max_requests` and `max_seconds`.

    `headers` go with every request (e.g. `{"X-Canary": "always"}`: testers routed by header).
    """

    def __init__(
        self,
        edge_url: str,
        rate: float = 25.0,
        workers: int = 6,
        max_seconds: float = 120.0,
        max_requests: int = 5000,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        _loopback_only(edge_url)
        self.edge_url = edge_url
        self.rate = rate
        self.workers = workers
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.headers = dict(headers or {})
        self.report = TrafficReport()
        self._lock = threading.Lock()
        self._sent = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, args=(index,), daemon=True)
            for index in range(workers)
        ]
        self.path = f"/api/users/{ensure_probe_user(edge_url)}"

    def _take_ticket(self) -> bool:
        with self._lock:
            if self._sent >= self.max_requests:
                return False
            self._sent += 1
            return True

    def _work(self, index: int) -> None:
        period = self.workers / self.rate
        # Spread the workers over one period so that requests arrive evenly.
        next_at = time.monotonic() + period * index / self.workers
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(base_url=self.edge_url, timeout=10.0, headers=self.headers) as client:
            while not self._stop.is_set():
                self._stop.wait(max(0.0, next_at - time.monotonic()))
                if self._stop.is_set() or time.monotonic() > deadline or not self._take_ticket():
                    return
                next_at += period
                sent_at, began = time.time(), time.monotonic()
                try:
                    response = client.get(self.path)
                    answer = Answer(
                        sent_at,
                        response.status_code,
                        track_of(response.headers.get("x-socialnet-server")),
                        time.monotonic() - began,
                    )
                except httpx.HTTPError:
                    answer = Answer(sent_at, 0, "", time.monotonic() - began)
                with self._lock:
                    self.report.answers.append(answer)

    def __enter__(self) -> UserTraffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> TrafficReport:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        return self.report


def canary_share(edge_url: str, requests: int = 400) -> float:
    """Share of `requests` sequential user requests that the canary track answered."""
    _loopback_only(edge_url)
    path = f"/api/users/{ensure_probe_user(edge_url)}"
    seen: Counter[str] = Counter()
    with httpx.Client(base_url=edge_url, timeout=10) as client:
        for _ in range(requests):
            response = client.get(path)
            seen[track_of(response.headers.get("x-socialnet-server"))] += 1
    return seen["canary"] / requests
