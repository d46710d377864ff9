"""Health checks through the edge, as a user would reach the app."""

from __future__ import annotations

import httpx
from prefect import get_run_logger, task
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from tasks.platform import environment_platform


class SmokeTestError(Exception):
    pass


# Retried inside the task: smoke tests run inside undo transactions, where a Prefect retry would
# roll the transaction back at the first failed attempt.
SMOKE_ATTEMPTS = 4
SMOKE_RETRY_SECONDS = 2.0


@task(name="smoke-test")
def smoke_test(environment: str, version: str, probes: int = 10) -> dict[str, int]:
    """Every probe through the edge answers, from `version`, and the API is ready."""
    edge = environment_platform(environment).endpoints().edge_url
    logger = get_run_logger()
    for attempt in Retrying(
        stop=stop_after_attempt(SMOKE_ATTEMPTS),
        wait=wait_fixed(SMOKE_RETRY_SECONDS),
        retry=retry_if_exception_type((SmokeTestError, httpx.HTTPError)),
        before_sleep=lambda state: logger.warning(
            "smoke test attempt %d failed: %s",
            state.attempt_number,
            state.outcome.exception() if state.outcome else "?",
        ),
        reraise=True,
    ):
        with attempt:
            return _probe(edge, version, probes)
    raise AssertionError("unreachable: tenacity reraises the last error")


def _probe(edge: str, version: str, probes: int) -> dict[str, int]:
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
