"""A flow that does nothing, run by a real process worker to time delivery -> Running."""

from __future__ import annotations

from prefect import flow


@flow(name="webhook-bench", log_prints=False)
def noop(
    env: str, version: str, ref: str | None = None, gitlab: dict[str, str] | None = None
) -> str:
    return version
