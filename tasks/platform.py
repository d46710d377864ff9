"""Platform tasks: what a flow asks of the environment's platform (local or Kubernetes)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import Transaction

from socialnet_ops.adapters.builds import load_build
from socialnet_ops.core.environments import load_environment
from socialnet_ops.core.failures import RejectedError
from socialnet_ops.core.ledger import CanaryRecord, ControlRequest
from socialnet_ops.platforms import platform_for
from socialnet_ops.platforms.base import Endpoints, Platform, PlatformError, Progress
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


# --- the canary's stored state and promote-now / abort-now requests -------------------------------


@task(name="read-canary-record", cache_policy=NO_CACHE)
def read_canary_record(environment: str) -> CanaryRecord | None:
    return environment_platform(environment).canary_record()


@task(name="store-canary-record", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def store_canary_record(environment: str, record: CanaryRecord | None) -> None:
    """Where the canary stands, kept with it by the platform (None: forget it)."""
    environment_platform(environment).save_canary_record(record)


@task(name="clear-canary-request", cache_policy=NO_CACHE)
def clear_canary_request(environment: str) -> None:
    environment_platform(environment).request_canary(None)


def keep_canary_record(environment: str, record: CanaryRecord) -> None:
    """Where the walk stands, at every step: a plain call, as a task run would delay the step
    (and shift the first analysis window onto the weight before it)."""
    environment_platform(environment).save_canary_record(record)


def pending_canary_request(environment: str) -> ControlRequest | None:
    """Polled between measurements: a plain call, not a task run every few seconds."""
    try:
        return environment_platform(environment).canary_request()
    except PlatformError as error:  # a blip while polling must not end the canary
        get_run_logger().warning("reading the canary's requests: %s", error)
        return None


@task(name="request-canary-action", cache_policy=NO_CACHE)
def request_canary_action(environment: str, request: ControlRequest) -> CanaryRecord:
    """Leave `request` for the run walking the environment's canary; there must be one."""
    platform = environment_platform(environment)
    record = platform.canary_record()
    if record is None:
        raise RejectedError(f"{environment}: no canary in flight to {request.action}")
    if record.status in {"promoting", "aborting"}:
        raise RejectedError(
            f"{environment}: canary {record.version} is already {record.status}; "
            f"nothing to {request.action}"
        )
    platform.request_canary(request)
    get_run_logger().info("%s: %s (canary %s)", environment, request.said, record.version)
    return record


def finish_canary_abort(environment: str, flow_run_id: str, progress: Progress) -> bool:
    """What a hook does when a canary run was cancelled, crashed or failed: when the canary it
    started is still in flight, weight 0 and canary replicas stopped (stable untouched). Marked
    `aborting` first: a run that dies here leaves the next run to finish it. True if it did."""
    platform = environment_platform(environment)
    record = platform.canary_record()
    if record is None or record.flow_run_id != flow_run_id:
        return False
    platform.save_canary_record(record.model_copy(update={"status": "aborting"}))
    progress(f"aborting canary {record.version} left at {record.weight}% (step {record.step})")
    platform.abort_canary(progress=progress)
    platform.save_canary_record(None)
    return True
