"""rollback: return an environment to an earlier release with the deploy's mechanics."""

from __future__ import annotations

from typing import Any

from prefect.runtime import flow_run

from flows.common import StepClock, checked_environment, release_flow, release_slot
from socialnet_ops.adapters.builds import check_version, load_build
from socialnet_ops.core.failures import RejectedError, before_any_change
from socialnet_ops.core.ledger import Ledger, ReleaseRecord
from tasks.health import smoke_test
from tasks.ledger import read_ledger, record_release
from tasks.platform import restore_replicas, serving_version
from tasks.reporting import artifact_key, emit, markdown_report


class NothingToRollBackError(RejectedError):
    """No recorded release to return to: the rollback changes nothing."""


def choose_target(ledger: Ledger, version: str | None, to_recorded: bool) -> ReleaseRecord:
    """A named version, the release the ledger records as serving, or the one before it."""
    if version is not None:
        record = ledger.find(check_version(version))
        if record is None:
            known = [r.version for r in [ledger.stable, *ledger.history] if r] or ["none"]
            raise NothingToRollBackError(
                f"{version!r} was never released to {ledger.environment}; released: {', '.join(known)}"
            )
        return record
    target = ledger.stable if to_recorded else ledger.previous()
    if target is None:
        raise NothingToRollBackError(f"{ledger.environment} has no earlier release to return to")
    return target


@release_flow(name="rollback", flow_run_name="rollback-{env}")
def rollback(
    env: str,
    version: str | None = None,
    to_recorded_stable: bool = False,
    reason: str = "requested",
) -> dict[str, Any]:
    """`to_recorded_stable` restores what the ledger says serves (after a failed deploy)."""
    checked_environment(env)
    clock = StepClock()
    with release_slot(env):
        with before_any_change():
            ledger = read_ledger(env)
            target = choose_target(ledger, version, to_recorded_stable)
            build = load_build(env, target.version)  # the stored build must still be there
            serving = serving_version(env)
        with clock("replicas"):
            restore_replicas(env, target.version)
        with clock("smoke test"):
            smoke_test(env, target.version)
        if not to_recorded_stable:
            record_release(env, build, "rollback")
    markdown_report(
        artifact_key("rollback", env),
        f"Rolled {env} back to {target.version}",
        {
            "from": serving or "nothing",
            "to": target.version,
            "reason": reason,
            "timings": clock.rows(),
        },
    )
    emit("release.rolled_back", env, version=target.version, previous=serving, reason=reason)
    return {
        "environment": env,
        "version": target.version,
        "from": serving,
        "flow_run_id": flow_run.get_id(),
    }
