"""The deploy and rollback flows on a real local platform, reported to a real Prefect server."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prefect.testing.utilities import prefect_test_harness

from flows.common import ensure_release_limits
from socialnet_ops.environments import load_environment
from socialnet_ops.platforms.local import LocalPlatform


@pytest.fixture(scope="package")
def prefect_server() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=120):
        ensure_release_limits(["local"])
        yield


@pytest.fixture(scope="package")
def local_platform(prefect_server: None) -> Iterator[LocalPlatform]:
    # A short state root the `postgres` user can traverse (pytest's tmp dirs are 0700).
    root = Path(tempfile.mkdtemp(prefix="snf-"))
    root.chmod(0o755)
    previous = os.environ.get("SOCIALNET_STATE_DIR")
    os.environ["SOCIALNET_STATE_DIR"] = str(root)
    platform = LocalPlatform(load_environment("local"))
    try:
        platform.start()
        yield platform
    finally:
        platform.stop()
        if previous is None:
            os.environ.pop("SOCIALNET_STATE_DIR", None)
        else:
            os.environ["SOCIALNET_STATE_DIR"] = previous
        shutil.rmtree(root, ignore_errors=True)


def served_versions(platform: LocalPlatform, probes: int = 20) -> set[str]:
    edge = platform.endpoints().edge_url
    with httpx.Client(base_url=edge, timeout=5) as client:
        return {client.get("/version").json()["version"] for _ in range(probes)}
