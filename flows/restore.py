"""restore: a dump into a database, or the cluster to a point in time; restore-drill: the proof.

Nothing is overwritten before it is verified: a dump is restored into a scratch database, checked
(checksum of the bytes downloaded, pg_restore's exit status, schema revision, row counts per table
against the manifest) and only then renamed into place. Restoring over an existing database needs
`confirm_overwrite=True`; the default target is a new database.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from flows.common import checked_environment, failure_of
from socialnet_ops.adapters.postgres import database_exists
from socialnet_ops.core.backups import BackupError, BackupTarget
from socialnet_ops.core.failures import RejectedError, changed_nothing, one_line
from socialnet_ops.core.results import (
    DumpRestoreResult,
    PointInTimeRestoreResult,
    RestoreDrillResult,
)
from tasks.postgres import (
    drop_database,
    resolve_backup_target,
    restore_dump,
    restore_point_in_time,
)
from tasks.reporting import emit, publish


class OverwriteNotConfirmedError(BackupError, RejectedError):
    """The target database exists and the run did not say it may be replaced."""


def announce_restore_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """on_failure hook: `socialnet.restore.failed` / `socialnet.backup.drill.failed` (alerted),
    or `socialnet.restore.rejected` when the run refused its input and changed nothing."""
    error = failure_of(state)
    event = "restore.failed" if flow.name == "restore" else "backup.drill.failed"
    if changed_nothing(error, state.message):
        event = "restore.rejected"
    emit(
        event,
        str(flow_run.parameters.get("env", "unknown")),
        flow=flow.name,
        backup_id=flow_run.parameters.get("backup_id", "latest"),
        reason=one_line(error if error is not None else str(state.message or "")),
    )


def _stamp() -> str:
    return f"{datetime.now(UTC):%Y%m%d%H%M%S}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def restore_destination(
    target: BackupTarget, env: str, target_database: str | None, confirm_overwrite: bool
) -> tuple[str, bool]:
    """The database to restore into and whether it replaces an existing one."""
    if target_database is None:
        return f"restore_{env.replace('-', '_')}_{_stamp()}", False
    exists = database_exists(target.database, target_database)
    if exists and not confirm_overwrite:
        live = (
            " (the environment's live database)"
            if target_database == target.database.database
            else ""
        )
        raise OverwriteNotConfirmedError(
            f"database {target_database}{live} exists: restoring replaces its data; run again "
            "with confirm_overwrite=True, or leave target_database empty for a new database"
        )
    return target_database, exists


@flow(
    name="restore", flow_run_name="restore-{env}-{backup_id}", on_failure=[announce_restore_failure]
)
def restore(
    env: str,
    backup_id: str = "latest",
    target_database: str | None = None,
    confirm_overwrite: bool = False,
    point_in_time: datetime | None = None,
    restore_dir: str | None = None,
    target: BackupTarget | None = None,
) -> DumpRestoreResult | PointInTimeRestoreResult:
    """A dump (`backup_id`, default the latest) into `target_database` (default: a new one), or,
    with `point_in_time`, the whole cluster as it was then, on a private port of this machine."""
    checked_environment(env)
    target = target or resolve_backup_target(env)
    if point_in_time is not None:
        # No folder made here: the task makes it once the time is known to be recoverable.
        restored = restore_point_in_time(target, point_in_time, restore_dir, _free_port())
        return publish(
            PointInTimeRestoreResult(environment=env, flow_run_id=flow_run.get_id(), **restored)
        )
    database, replace = restore_destination(target, env, target_database, confirm_overwrite)
    dumped = restore_dump(target, backup_id, database, replace)
    return publish(DumpRestoreResult(environment=env, flow_run_id=flow_run.get_id(), **dumped))


@flow(
    name="restore-drill", flow_run_name="restore-drill-{env}", on_failure=[announce_restore_failure]
)
def restore_drill(
    env: str, backup_id: str = "latest", target: BackupTarget | None = None
) -> RestoreDrillResult:
    """Restore the latest backup into a scratch database, verify it, drop it, report."""
    checked_environment(env)
    target = target or resolve_backup_target(env)
    scratch = f"drill_{env.replace('-', '_')}_{_stamp()}"
    restored = restore_dump(target, backup_id, scratch, False)
    drop_database(target, scratch)
    return publish(
        RestoreDrillResult(
            environment=env,
            flow_run_id=flow_run.get_id(),
            backup_id=restored["backup_id"],
            scratch_database=scratch,
            size_bytes=restored["size_bytes"],
            sha256=restored["sha256"],
            schema_revision=restored["schema_revision"],
            tables=restored["tables"],
            rows=restored["rows"],
            seconds=restored["seconds"],
        )
    )
