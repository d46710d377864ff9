"""Platform tasks: what a flow asks of the environment's platform (local or Kubernetes)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import Transaction

from socialnet_ops.adapters.builds import load_build
from socialnet_ops.core.environments import load_environment
from socialnet_ops.platforms import platform_for
from socialnet_ops.platforms.base import Endpoints, Platform
from tasks.undo import recalled, remember, undo_step


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


@task(name="note-serving-release", cache_policy=NO_CACHE)
def note_serving_release(environment: str) -> str | None:
    """What serves before the replicas change; undoing the change returns to it."""
    version = environment_platform(environment).status().stable_version
    remember(environment=environment, version=version)
    return version


@note_serving_release.on_rollback
def return_to_serving_release(txn: Transaction) -> None:
    environment, version = recalled(txn, "environment"), recalled(txn, "version")
    if version is None:
        get_run_logger().warning("%s served nothing before: no replicas to return to", environment)
        return

    def restore() -> None:
        if environment_platform(environment).status().stable_version == version:
            get_run_logger().info("%s still serves %s on its stable track", environment, version)
            return
        restore_replicas.fn(environment, version)

    undo_step(f"replicas of {environment}: back to {version}", restore)


@task(name="platform-endpoints")
def platform_endpoints(environment: str) -> Endpoints:
    return environment_platform(environment).endpoints()


# --- canary track ---------------------------------------------------------------------------------
# Never cached: each call acts on the platform as it is now (a rerun starts, weighs, aborts again).


@task(name="start-canary", cache_policy=NO_CACHE)
def start_canary(environment: str, version: str) -> None:
    """Start the canary replicas of `version` at weight 0 (a rerun keeps ready ones)."""
    environment_platform(environment).start_canary(
        load_build(environment, version), progress=get_run_logger().info
    )


@task(name="set-canary-weight", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def set_canary_weight(environment: str, weight: int) -> None:
    environment_platform(environment).set_canary_weight(weight)
    get_run_logger().info("canary weight %d%%", weight)


@task(name="promote-canary", cache_policy=NO_CACHE)
def promote_canary(environment: str) -> None:
    """The canary build replaces the stable replicas one by one; the canary track empties."""
    environment_platform(environment).promote_canary(progress=get_run_logger().info)


@task(name="abort-canary", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def abort_canary(environment: str) -> None:
    """Weight 0 and the canary replicas stopped; the stable track is not touched."""
    environment_platform(environment).abort_canary(progress=get_run_logger().info)


@task(name="rendered-digest", cache_policy=NO_CACHE)
def rendered_digest(environment: str) -> str | None:
    """What the platform rendered for the serving release (the release manifest records it)."""
    return environment_platform(environment).rendered_digest()
