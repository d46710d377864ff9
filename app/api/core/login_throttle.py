"""Failed-login limits per account and per client address, counted in this replica's memory.

An account (its normalised username) or an address that has failed `limit` times within the
window gets 429 with the seconds until its oldest counted failure leaves the window; successful
logins are not counted, so people who log in often from one address (an office behind one NAT)
are never held back by their own successes.

Per replica: each API replica counts what it saw, so behind an edge balancing N replicas a guesser
gets up to N times the limit. That is acceptable here: what the limit protects is each replica's
CPU (every guess costs an argon2 hash) and the pace of guessing (N x 5 a minute per account stays
far too slow for online guessing of a password of 8+ characters), and counting in the database
would turn every wrong password of a flood into a database write.

Written here rather than with a library: the well-kept one, `limits`, counts requests with
`hit` and checks with `test`, with no way to hold a slot while the password is verified and give
it back when it was right. Checking with `test` and counting failures with `hit` lets a burst of
parallel guesses (the thread pool runs 40 at once) all pass before the first failure is counted;
counting every attempt with `hit` would limit successful logins too. The sliding log below
reserves a slot under a lock, keeps it as a failure or frees it, and so holds under bursts.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


class TooManyFailedLoginsError(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass
class _Log:
    """One key's failures within the window (oldest first) and its attempts being verified."""

    failures: deque[float] = field(default_factory=deque)
    in_flight: int = 0


@dataclass
class LoginAttempt:
    failed: bool = False

    def fail(self) -> None:
        self.failed = True


class LoginThrottle:
    def __init__(
        self,
        per_account: int,
        per_address: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = {"account": per_account, "address": per_address}
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._logs: dict[tuple[str, str], _Log] = {}
        self._next_sweep = clock() + window_s

    @contextmanager
    def attempt(self, account: str, address: str) -> Iterator[LoginAttempt]:
        """Admits one login attempt or raises TooManyFailedLoginsError; counts it as a failure
        when the body calls `fail()` on it."""
        keys = [("account", account), ("address", address)]
        with self._lock:
            now = self._clock()
            self._sweep(now)
            waits = [self._wait_s(key, now) for key in keys]
            if any(wait is not None for wait in waits):
                raise TooManyFailedLoginsError(max(math.ceil(w) for w in waits if w is not None))
            logs = [self._logs.setdefault(key, _Log()) for key in keys]
            for log in logs:
                log.in_flight += 1
        attempt = LoginAttempt()
        try:
            yield attempt
        finally:
            with self._lock:
                now = self._clock()
                for log in logs:
                    log.in_flight -= 1
                    if attempt.failed:
                        log.failures.append(now)

    def _wait_s(self, key: tuple[str, str], now: float) -> float | None:
        """Seconds until `key` may try again; None when it may now."""
        log = self._logs.get(key)
        if log is None:
            return None
        while log.failures and log.failures[0] <= now - self._window_s:
            log.failures.popleft()
        # Failures that must leave the window before one more attempt fits.
        excess = len(log.failures) + log.in_flight - self._limits[key[0]] + 1
        if excess <= 0:
            return None
        if excess > len(log.failures):
            return 1.0  # held back by attempts still being verified, not by failures
        return max(1.0, log.failures[excess - 1] + self._window_s - now)

    def _sweep(self, now: float) -> None:
        # Forgets keys with nothing in the window, at most once a window: guesses spread over
        # many usernames cannot grow memory beyond one window's failures.
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._window_s
        for key, log in list(self._logs.items()):
            if log.in_flight == 0 and (
                not log.failures or log.failures[-1] <= now - self._window_s
            ):
                del self._logs[key]
