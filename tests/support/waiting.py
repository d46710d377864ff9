"""Test support: waiting, bounded in time, for something a test expects to happen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    condition: Callable[[], Any],
    timeout_s: float = 30.0,
    what: str = "condition",
    interval_s: float = 0.1,
) -> Any:
    """The first true value `condition` returns; fails the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
