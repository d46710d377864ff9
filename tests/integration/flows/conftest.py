"""The deploy and rollback flows on a real local platform, reported to a real Prefect server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from socialnet_ops.platforms.local import LocalPlatform
from tests.support.prefect import running_local_platform


@pytest.fixture(scope="package")
def local_platform(prefect_server: None) -> Iterator[LocalPlatform]:
    with running_local_platform() as platform:
        yield platform


def served_versions(platform: LocalPlatform, probes: int = 20) -> set[str]:
    edge = platform.endpoints().edge_url
    with httpx.Client(base_url=edge, timeout=5) as client:
        return {client.get("/version").json()["version"] for _ in range(probes)}
