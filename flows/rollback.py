"""rollback: return an environment to an earlier release with the deploy's mechanics."""

from __future__ import annotations

from prefect.runtime import flow_run

from flows.canary import settle_interrupted_canary
from flows.common import StepClock, checked_environment, manifest_of, release_flow, release_slot
from socialnet_ops.adapters.builds import check_version, load_build
from socialnet_ops.core.failures import RejectedError, before_any_change
from socialnet_ops.core.ledger import Ledger, ReleaseRecord
from socialnet_ops.core.results import RollbackResult
from tasks.health import smoke_test
from tasks.ledger import read_ledger, record_release
from tasks.platform import restore_replicas, serving_version
from tasks.reporting import publish
from tasks.vault import read_secret_versions


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
) -> RollbackResult:
    """`to_recorded_stable` restores what the ledger says serves (after a failed deploy)."""
    environment = checked_environment(env)
    clock = StepClock()
    with release_slot(env):
        settle_interrupted_canary(env, version or "")
        with before_any_change():
            ledger = read_ledger(env)
            target = choose_target(ledger, version, to_recorded_stable)
            build = load_build(env, target.version)  # the stored build must still be there
            serving = serving_version(env)
            secret_versions = read_secret_versions(env)
        with clock("replicas"):
            restore_replicas(env, target.version)
        with clock("smoke test"):
            smoke_test(env, target.version)
        # The build carries its commit's app, chart and values; infrastructure, node
        # configuration and secrets stay as they are (they converge forward).
        manifest = manifest_of(environment, build, secret_versions, target.backup_id)
        if not to_recorded_stable:
            record_release(env, build, "rollback", manifest)
    return publish(
        RollbackResult(
            environment=env,
            flow_run_id=flow_run.get_id(),
            version=target.version,
            previous=serving,
            reason=reason,
            seconds=clock.seconds,
            manifest=manifest,
        )
    )
