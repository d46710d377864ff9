"""Platform tasks: what a flow asks of the environment's platform (local or Kubernetes)."""

from __future__ import annotations

from prefect import get_run_logger, task

from socialnet_ops.builds import load_build
from socialnet_ops.environments import load_environment
from socialnet_ops.platforms import platform_for
from socialnet_ops.platforms.base import Endpoints, Platform


def environment_platform(environment: str) -> Platform:
    return platform_for(load_environment(environment))


@task(name="roll-replicas")
def roll_replicas(environment: str, version: str) -> None:
    """Replace the stable replicas one by one; no retry: a replica that is never ready fails."""
    environment_platform(environment).deploy(
        load_build(environment, version), progress=get_run_logger().info
    )


@task(name="restore-replicas")
def restore_replicas(environment: str, version: str) -> None:
    environment_platform(environment).rollback(
        load_build(environment, version), progress=get_run_logger().info
    )


@task(name="serving-version")
def serving_version(environment: str) -> str | None:
    return environment_platform(environment).status().stable_version


@task(name="platform-endpoints")
def platform_endpoints(environment: str) -> Endpoints:
    return environment_platform(environment).endpoints()
