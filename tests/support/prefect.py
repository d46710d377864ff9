"""Test support: a real Prefect server for the session, and local platforms for suites."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from socialnet_ops.environments import Environment, load_environment
from socialnet_ops.platforms.local import LocalPlatform


@contextmanager
def state_root(prefix: str) -> Iterator[Path]:
    """A short state root (unix socket paths are limited) the `postgres` user can traverse."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    previous = os.environ.get("SOCIALNET_STATE_DIR")
    os.environ["SOCIALNET_STATE_DIR"] = str(root)
    try:
        yield root
    finally:
        if previous is None:
            os.environ.pop("SOCIALNET_STATE_DIR", None)
        else:
            os.environ["SOCIALNET_STATE_DIR"] = previous
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
