"""restore: a dump into a database, or the cluster recovered by pgBackRest to a time, a named
restore point or the latest; restore-drill proves the dumps, pitr-drill the physical backups.

Nothing is overwritten before it is verified: a dump is restored into a scratch database, checked
(checksum of the bytes downloaded, pg_restore's exit status, schema revision, row counts per table
against the manifest) and only then renamed into place. Restoring over an existing database needs
`confirm_overwrite=True`; the default target is a new database.
"""

from __future__ import annotations

import socket
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from flows.backup import backup_policy
from flows.common import checked_environment, failure_of
from socialnet_ops.adapters.postgres import database_exists
from socialnet_ops.core.backups import (
    BackupError,
    BackupTarget,
    VerificationError,
    new_backup_id,
)
from socialnet_ops.core.failures import RejectedError, changed_nothing, one_line
from socialnet_ops.core.physical_backups import (
    DrillRecord,
    RecoveryTargetKind,
    marker_mismatches,
    pick_marker,
)
from socialnet_ops.core.results import (
    DumpRestoreResult,
    PitrDrillResult,
    PointInTimeRestoreResult,
    RestoreDrillResult,
)
from tasks.physical_backups import (
    archive_current_wal,
    engine_repositories,
    list_markers,
    read_catalog,
    record_drill,
    recover_cluster,
    stop_recovered,
    verify_repository,
)
from tasks.postgres import (
    drop_database,
    resolve_backup_target,
    restore_dump,
    wal_archiver_status,
)
from tasks.reporting import emit, publish


class OverwriteNotConfirmedError(BackupError, RejectedError):
    """The target database exists and the run did not say it may be replaced."""


class RejectedRestoreError(BackupError, RejectedError):
    """The parameters ask for something no restore does; nothing was touched."""


def announce_restore_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """on_failure hook: `socialnet.restore.failed` / `socialnet.backup.drill.failed` (alerted),
    or `socialnet.restore.rejected` when the run refused its input and changed nothing."""
    error = failure_of(state)
    event = "restore.failed" if flow.name == "restore" else "backup.drill.failed"
    if flow.name == "pitr-drill":
        event = "backup.pitr_drill.failed"
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


def physical_target(
    point_in_time: datetime | None, restore_point: str | None, latest: bool
) -> tuple[RecoveryTargetKind, str | None] | None:
    """Which physical recovery the parameters ask for (at most one), or None for a dump."""
    asked = [
        name
        for name, value in (
            ("point_in_time", point_in_time),
            ("restore_point", restore_point),
            ("latest", latest),
        )
        if value
    ]
    if len(asked) > 1:
        raise RejectedRestoreError(
            f"restore: {' and '.join(asked)} both given; a recovery has one target"
        )
    if point_in_time is not None:
        if point_in_time.tzinfo is None:
            raise RejectedRestoreError(
                f"restore: point_in_time {point_in_time.isoformat()} has no time zone; add one "
                "(e.g. +00:00)"
            )
        return "time", point_in_time.isoformat()
    if restore_point:
        return "name", restore_point
    return ("latest", None) if latest else None


@flow(
    name="restore", flow_run_name="restore-{env}-{backup_id}", on_failure=[announce_restore_failure]
)
def restore(
    env: str,
    backup_id: str = "latest",
    target_database: str | None = None,
    confirm_overwrite: bool = False,
    point_in_time: datetime | None = None,
    restore_point: str | None = None,
    latest: bool = False,
    restore_dir: str | None = None,
    target: BackupTarget | None = None,
) -> DumpRestoreResult | PointInTimeRestoreResult:
    """A dump (`backup_id`, default the latest) into `target_database` (default: a new one); or,
    with `point_in_time`, `restore_point` or `latest`, the whole cluster recovered by pgBackRest
    (delta when `restore_dir` holds an earlier restore), on a private port of this machine."""
    checked_environment(env)
    physical = physical_target(point_in_time, restore_point, latest)
    target = target or resolve_backup_target(env)
    if physical is not None:
        kind, value = physical
        restored = recover_cluster(target, kind, value, restore_dir, _free_port())
        return publish(
            PointInTimeRestoreResult(
                environment=env,
                flow_run_id=flow_run.get_id(),
                **{k: v for k, v in restored.items() if k != "table_checksums"},
            )
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


def drill_directory(env: str) -> str:
    """Kept between drills: the next one is a delta restore over this one's cluster."""
    return str(Path(tempfile.gettempdir()) / f"socialnet-pitr-drill-{env}")


@flow(name="pitr-drill", flow_run_name="pitr-drill-{env}", on_failure=[announce_restore_failure])
def pitr_drill(
    env: str,
    seed: int | None = None,
    restore_dir: str | None = None,
    target: BackupTarget | None = None,
) -> PitrDrillResult:
    """Recover a random recorded moment of the window (backup + WAL) into a scratch cluster,
    compare it with what the database held then, verify the repositories, report RTO and RPO."""
    policy = backup_policy(checked_environment(env)).physical
    target = target or resolve_backup_target(env)
    drill_id = new_backup_id()
    outcome = DrillRecord(
        environment=env,
        drill_id=drill_id,
        finished_at=datetime.now(UTC),
        passed=False,
        rto_objective_s=policy.rto_objective,
        rpo_objective_s=policy.rpo_objective,
    )
    try:
        archive_current_wal(target)
        catalog = read_catalog(target)
        archived = wal_archiver_status(target)
        oldest = catalog.in_repository(1)
        marker = pick_marker(
            list_markers(target),
            oldest[0].stopped_at if oldest else None,
            catalog.archive_max_wal,
            seed,
        )
        restored = recover_cluster(
            target, "time", marker.taken_at.isoformat(), restore_dir or drill_directory(env),
            _free_port(),
        )  # fmt: skip
        stop_recovered(restored["data_dir"])
        problems = marker_mismatches(marker, restored["row_counts"], restored["table_checksums"])
        if problems:
            raise VerificationError(
                f"recovery to {marker.taken_at.isoformat()} does not hold what the database held "
                "then: " + "; ".join(problems)
            )
        for repository in engine_repositories(target):
            verify_repository(target, repository)
        newest = archived.get("last_archived_time")
        outcome = outcome.model_copy(
            update={
                "finished_at": datetime.now(UTC),
                "passed": True,
                "target_time": marker.taken_at,
                "backup_label": restored["backup_label"],
                "rto_s": restored["recovery_s"],
                "rpo_s": round((datetime.now(UTC) - newest).total_seconds(), 3) if newest else None,
            }
        )
    except Exception as error:
        record_drill(
            target,
            outcome.model_copy(
                update={"finished_at": datetime.now(UTC), "problem": one_line(error)}
            ),
        )
        raise
    record_drill(target, outcome)
    return publish(
        PitrDrillResult(
            environment=env,
            flow_run_id=flow_run.get_id(),
            drill_id=drill_id,
            marker_time=marker.taken_at.isoformat(),
            backup_label=outcome.backup_label,
            delta=restored["delta"],
            rto_s=restored["recovery_s"],
            rpo_s=outcome.rpo_s or 0.0,
            rto_objective_s=policy.rto_objective,
            rpo_objective_s=policy.rpo_objective,
            newest_recoverable=newest.isoformat() if newest else None,
            tables=len(marker.row_counts),
            rows=sum(marker.row_counts.values()),
            checksum=marker.checksum,
            verified_repositories=list(engine_repositories(target)),
        )
    )
