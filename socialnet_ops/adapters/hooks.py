"""Flagger-style webhooks of a canary: tests, gates, notifications, and a bounded load test.

A hook is a command or a URL. A command runs with the canary's addresses in its environment
(`CANARY_URL`, `STABLE_URL`, `CANARY_VERSION`, `STABLE_VERSION`, `ENVIRONMENT`) and says yes by
exiting 0; a URL is POSTed the same facts as JSON (Flagger's payload: name, phase, metadata) and
says yes with a 2xx. A gate asks its URL until it says yes (2xx) or no (403, 409), or its time ends.

The load generator is written here because the tools that do this (hey, k6, Flagger's
loadtester) are separate binaries or services; a paced loop of httpx GETs over the track's own
addresses, stopped by its deadline or by the canary's end, is all a quiet service needs for a
verdict.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx

# A refusal at a gate (Flagger answers anything but 200 as "not yet"; these two say "no").
REFUSALS = {403, 409}
OUTPUT_CHARS = 300


@dataclass(frozen=True)
class HookContext:
    """What a hook is told about the canary."""

    environment: str
    version: str
    stable_version: str
    phase: str  # pre-rollout, confirm-rollout, confirm-promotion, post-rollout
    canary_urls: Sequence[str] = ()
    stable_urls: Sequence[str] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)

    def variables(self) -> dict[str, str]:
        return {
            "ENVIRONMENT": self.environment,
            "CANARY_VERSION": self.version,
            "STABLE_VERSION": self.stable_version,
            "CANARY_URL": self.canary_urls[0] if self.canary_urls else "",
            "STABLE_URL": self.stable_urls[0] if self.stable_urls else "",
            "CANARY_PHASE": self.phase,
        }

    def payload(self) -> dict[str, object]:
        return {
            "name": self.environment,
            "phase": self.phase,
            "metadata": {**self.variables(), **self.metadata},
        }


def _last_words(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:OUTPUT_CHARS]


def run_command(command: Sequence[str], context: HookContext, timeout: float) -> tuple[bool, str]:
    """Run a hook command to its end: (exited 0, what it said last)."""
    try:
        done = subprocess.run(
            list(command),
            env={**os.environ, **context.variables()},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        return False, f"{command[0]}: command not found"
    except subprocess.TimeoutExpired:
        return False, f"{command[0]} did not finish within {timeout:.0f} s"
    said = _last_words(done.stdout + "\n" + done.stderr) or "no output"
    if done.returncode != 0:
        return False, f"{command[0]} exited {done.returncode}: {said}"
    return True, f"{command[0]} exited 0: {said}"


def post(url: str, context: HookContext, timeout: float) -> tuple[int | None, str]:
    """POST the hook payload: (status, what it answered); status None when unreachable."""
    try:
        answer = httpx.post(url, json=context.payload(), timeout=timeout)
    except httpx.HTTPError as error:
        return None, f"{url} unreachable: {type(error).__name__}"
    return answer.status_code, f"{url} answered {answer.status_code}: {_last_words(answer.text)}"


def call_url(url: str, context: HookContext, timeout: float) -> tuple[bool, str]:
    status, said = post(url, context, timeout)
    return status is not None and 200 <= status < 300, said


def ask_until_answered(
    url: str,
    context: HookContext,
    timeout: float,
    interval: float,
    stop: Callable[[], bool] = lambda: False,
) -> tuple[bool, str]:
    """A gate: ask `url` every `interval` until yes (2xx) or no (403/409); no answer is a no once
    `timeout` passes. `stop()` true (someone asked to promote or abort now) ends the wait."""
    deadline = time.monotonic() + timeout
    said = f"{url} never asked"
    for asked in itertools.count(1):
        status, said = post(url, context, min(interval, 10.0) + 5)
        if status is not None and 200 <= status < 300:
            return True, f"confirmed after {asked} ask(s): {said}"
        if status in REFUSALS:
            return False, f"refused: {said}"
        left = deadline - time.monotonic()
        if left <= 0 or stop():
            break
        time.sleep(min(interval, left))
    return False, f"no yes within {timeout:.0f} s (last: {said})"


@dataclass
class LoadCount:
    sent: int = 0
    failed: int = 0


class LoadGenerator:
    """Paced GETs to each track's own addresses at `rate` per second per track, for at most
    `duration` seconds; `stop()` ends it sooner. Counts what each track answered."""

    def __init__(
        self,
        targets: Mapping[str, Sequence[str]],
        paths: Sequence[str],
        rate: float,
        duration: float,
    ) -> None:
        self.targets = {track: list(urls) for track, urls in targets.items() if urls}
        self.paths = list(paths)
        self.rate = rate
        self.duration = duration
        self.counts = {track: LoadCount() for track in self.targets}
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> LoadGenerator:
        for track in self.targets:
            thread = threading.Thread(
                target=self._send, args=(track,), name=f"load-{track}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def _send(self, track: str) -> None:
        urls = itertools.cycle(
            [base.rstrip("/") + path for base in self.targets[track] for path in self.paths]
        )
        count = self.counts[track]
        started = time.monotonic()
        with httpx.Client(timeout=5) as client:
            for sent in itertools.count():
                due = started + sent / self.rate
                if due - started >= self.duration or self._stopped.wait(
                    max(0.0, due - time.monotonic())
                ):
                    return
                count.sent += 1
                try:
                    failed = client.get(next(urls)).status_code >= 500
                except httpx.HTTPError:
                    failed = True
                count.failed += failed

    def stop(self) -> dict[str, LoadCount]:
        self._stopped.set()
        for thread in self._threads:
            thread.join(timeout=10)
        return self.counts

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)
