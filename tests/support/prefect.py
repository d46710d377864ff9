"""Test support: a real Prefect server for the session, and local platforms for suites."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from socialnet_ops.core.environments import Environment, load_environment
from socialnet_ops.platforms.local import LocalPlatform


@contextmanager
def environment_variable(name: str, value: str) -> Iterator[None]:
    """`name=value` in os.environ for the block, then as it was."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@contextmanager
def state_root(prefix: str) -> Iterator[Path]:
    """A short state root (unix socket paths are limited) the `postgres` user can traverse."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    try:
        with environment_variable("SOCIALNET_STATE_DIR", str(root)):
            yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def running_local_platform(
    environment: Environment | None = None, prefix: str = "snf-"
) -> Iterator[LocalPlatform]:
    """A started local platform (default: the `local` environment) in its own state root."""
    with state_root(prefix):
        platform = LocalPlatform(environment or load_environment("local"))
        try:
            platform.start()
            yield platform
        finally:
            platform.stop()


def socialnet_events(name: str, since: datetime, settle_s: float = 6.0) -> list[dict[str, Any]]:
    """Events `socialnet.<name>` the Prefect server received since `since` (as automations see them).

    Events travel and are stored asynchronously: the server is polled until `settle_s` passes
    without news.
    """
    from prefect.client.orchestration import get_client
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=10)
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + settle_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            response = client.request(
                "POST",
                "/events/filter",
                json={
                    "filter": {
                        "occurred": {"since": since.isoformat()},
                        "event": {"prefix": ["socialnet."]},
                    },
                    "limit": 50,
                },
            )
            events = [
                event
                for event in response.json().get("events", [])
                if event["event"] == f"socialnet.{name}"
            ]
            if len(events) > len(found):
                found = events
                deadline = time.monotonic() + settle_s
            time.sleep(0.5)
    return found
