"""What a test needs from the machine: skipped on a developer's machine without it, failed in CI.

Under CI (`CI=true`) a missing tool or service is a broken runner, never a reason to skip.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> NoReturn:
    """Skip outside CI; fail inside it, with the reason."""
    if running_in_ci():
        pytest.fail(f"{reason} (CI is set: this must run here)", pytrace=False)
    pytest.skip(reason)
