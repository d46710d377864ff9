"""The release ledger in Prefect Variables: one JSON document per environment, seen by every worker.

Writers hold the environment's release slot, so read-modify-write does not race.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.runtime import flow_run
from prefect.variables import Variable

from socialnet_ops.core.ledger import (
    CanaryRecord,
    Ledger,
    ReleaseManifest,
    ReleaseRecord,
    Strategy,
)
from socialnet_ops.core.terraform import DriftReport
from socialnet_ops.platforms.base import Build


def ledger_variable(environment: str) -> str:
    return f"ledger-{environment}"


def load_ledger(environment: str) -> Ledger:
    value = Variable.get(ledger_variable(environment), default=None)
    if value is None:
        return Ledger(environment=environment)
    return Ledger.model_validate(value)


def _save(ledger: Ledger) -> Ledger:
    Variable.set(
        ledger_variable(ledger.environment),
        ledger.model_dump(mode="json", exclude_none=True),
        tags=["socialnet", "ledger"],
        overwrite=True,
    )
    return ledger


@task(name="read-ledger")
def read_ledger(environment: str) -> Ledger:
    return load_ledger(environment)


@task(name="record-release", retries=3, retry_delay_seconds=2)
def record_release(
    environment: str, build: Build, strategy: Strategy, manifest: ReleaseManifest | None = None
) -> Ledger:
    """`build` serves `environment` now; the run that put it there and its manifest with it."""
    record = ReleaseRecord(
        version=build.version,
        git_sha=build.git_sha,
        ref=build.ref,
        strategy=strategy,
        flow_run_id=flow_run.get_id(),
        backup_id=manifest.backup_id if manifest else None,
        manifest=manifest,
    )
    return _save(load_ledger(environment).with_stable(record))


@task(name="record-canary", retries=3, retry_delay_seconds=2)
def record_canary(environment: str, canary: CanaryRecord | None) -> Ledger:
    return _save(load_ledger(environment).with_canary(canary))


@task(name="record-backup", retries=3, retry_delay_seconds=2)
def record_backup(environment: str, backup: dict[str, str]) -> Ledger:
    """The environment's last complete backup (a read-modify-write: hold the release slot)."""
    return _save(load_ledger(environment).model_copy(update={"last_backup": backup}))


# Drift is kept apart from the ledger: the drift check runs beside releases, without their slot.
def drift_variable(environment: str) -> str:
    return f"drift-{environment}"


def load_drift(environment: str) -> dict[str, Any] | None:
    value = Variable.get(drift_variable(environment), default=None)
    return value if isinstance(value, dict) else None


@task(name="record-drift", retries=3, retry_delay_seconds=2)
def record_drift(report: DriftReport) -> None:
    """The last drift check of an environment, for `socialnet-ops status`."""
    Variable.set(
        drift_variable(report.environment),
        {
            "status": report.status,
            "addresses": report.addresses[:50],
            "detail": report.detail[:300],
            "checked_at": datetime.now(UTC).isoformat(),
        },
        tags=["socialnet", "drift"],
        overwrite=True,
    )
