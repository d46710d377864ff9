"""Health checks through the edge, as a user would reach the app."""

from __future__ import annotations

import httpx
from prefect import get_run_logger, task

from tasks.platform import environment_platform


class SmokeTestError(Exception):
    pass


@task(name="smoke-test", retries=3, retry_delay_seconds=2)
def smoke_test(environment: str, version: str, probes: int = 10) -> dict[str, int]:
    """Every probe through the edge answers, from `version`, and the API is ready."""
    edge = environment_platform(environment).endpoints().edge_url
    logger = get_run_logger()
    seen: dict[str, int] = {}
    with httpx.Client(base_url=edge, timeout=5) as client:
        for _ in range(probes):
            answer = client.get("/version")
            if answer.status_code != 200:
                raise SmokeTestError(f"{edge}/version answered {answer.status_code}")
            served = answer.json()["version"]
            seen[served] = seen.get(served, 0) + 1
        ready = client.get("/api/timeline")
        if ready.status_code >= 500:
            raise SmokeTestError(f"{edge}/api/timeline answered {ready.status_code}")
        front = client.get("/")
        if front.status_code != 200:
            raise SmokeTestError(f"{edge}/ (front) answered {front.status_code}")
    if set(seen) != {version}:
        raise SmokeTestError(f"the edge serves {seen}, expected only {version!r}")
    logger.info("smoke test: %d/%d probes served %s", seen[version], probes, version)
    return seen
