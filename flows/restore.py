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

from flows.common import checked_environment, failure_of
from socialnet_ops.core.backups import BackupError, BackupTarget
from socialnet_ops.core.failures import RejectedError, changed_nothing, one_line
from tasks.postgres import (
    database_exists,
    drop_database,
    resolve_backup_target,
    restore_dump,
    restore_point_in_time,
)
from tasks.reporting import artifact_key, emit, markdown_report


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
) -> dict[str, Any]:
    """A dump (`backup_id`, default the latest) into `target_database` (default: a new one), or,
    with `point_in_time`, the whole cluster as it was then, on a private port of this machine."""
    checked_environment(env)
    target = target or resolve_backup_target(env)
    if point_in_time is not None:
        # No folder made here: the task makes it once the time is known to be recoverable.
        result = restore_point_in_time(target, point_in_time, restore_dir, _free_port())
        markdown_report(
            artifact_key("restore", env),
            f"{env} restored to {point_in_time.isoformat()}",
            {
                "base backup": result["base_backup"],
                "WAL replayed": f"{result['wal_segments']} segments",
                "stopped": result["recovery_stop"] or "at the end of the archived WAL",
                "server": f"{result['host']}:{result['port']} (data {result['data_dir']})",
                "stop it with": result["stop_with"],
                "rows": [f"{table}: {count}" for table, count in result["row_counts"].items()],
            },
        )
        emit(
            "restore.completed",
            env,
            mode="point-in-time",
            **{k: result[k] for k in ("base_backup", "target_time", "port")},
        )
        return result
    database, replace = restore_destination(target, env, target_database, confirm_overwrite)
    result = restore_dump(target, backup_id, database, replace)
    markdown_report(
        artifact_key("restore", env),
        f"Backup {result['backup_id']} restored into {database}",
        {
            "verified": f"sha256 {result['sha256']}, pg_restore exit 0, schema revision "
            f"{result['schema_revision'] or 'none'}, row counts of {result['tables']} tables",
            "rows": result["rows"],
            "replaced": f"yes, previous kept as {result['previous_database_kept_as']}"
            if replace
            else "no (new database)",
            "duration": f"{result['seconds']} s",
        },
    )
    emit(
        "restore.completed",
        env,
        mode="dump",
        backup_id=result["backup_id"],
        database=database,
        replaced=replace,
    )
    return result


@flow(
    name="restore-drill", flow_run_name="restore-drill-{env}", on_failure=[announce_restore_failure]
)
def restore_drill(
    env: str, backup_id: str = "latest", target: BackupTarget | None = None
) -> dict[str, Any]:
    """Restore the latest backup into a scratch database, verify it, drop it, report."""
    checked_environment(env)
    target = target or resolve_backup_target(env)
    scratch = f"drill_{env.replace('-', '_')}_{_stamp()}"
    result = restore_dump(target, backup_id, scratch, False)
    drop_database(target, scratch)
    markdown_report(
        artifact_key("restore-drill", env),
        f"Restore drill of {env}: backup {result['backup_id']} verified",
        {
            "restored": f"{result['size_bytes']} bytes into {scratch} (dropped) in {result['seconds']} s",
            "verified": f"sha256 {result['sha256']}, pg_restore exit 0, schema revision "
            f"{result['schema_revision'] or 'none'}, {result['rows']} rows in {result['tables']} tables",
        },
    )
    emit(
        "backup.drill.completed",
        env,
        backup_id=result["backup_id"],
        seconds=result["seconds"],
        rows=result["rows"],
    )
    return result
