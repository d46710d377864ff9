"""Physical backups, recovery and drills: thin tasks over pgBackRest (socialnet_ops.adapters.
pgbackrest), the scratch-cluster recovery (adapters.pg_recovery) and the markers and drill
records in the bucket (adapters.backup_records). The decisions are in core.physical_backups.

pgBackRest resumes an interrupted backup and every command here can run again to the same end,
so the tasks retry."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from socialnet_ops.adapters import backup_records
from socialnet_ops.adapters.pg_recovery import (
    engine_of,
    record_marker,
    recover,
    stop_restored_server,
)
from socialnet_ops.adapters.pgbackrest import PgBackRest
from socialnet_ops.adapters.postgres import create_restore_point, read_archiver_status
from socialnet_ops.core.backups import BackupTarget
from socialnet_ops.core.environments import PhysicalBackupPolicy
from socialnet_ops.core.physical_backups import (
    BackupType,
    Catalog,
    DrillRecord,
    PhysicalBackup,
    RecoveryMarker,
    RecoveryTargetKind,
    RestorePoint,
    choose_backup_type,
    drill_metrics,
    plan_retention,
    release_guard_problems,
)
from socialnet_ops.core.results import PhysicalRetentionOutcome


def _engine(target: BackupTarget) -> PgBackRest:
    return PgBackRest(engine_of(target), get_run_logger())


def engine_repositories(target: BackupTarget) -> tuple[int, ...]:
    return engine_of(target).repositories


@task(name="prepare-backup-engine", retries=2, retry_delay_seconds=5)
def prepare_engine(target: BackupTarget) -> None:
    """The stanza exists in every repository (stanza-create checks an existing one)."""
    _engine(target).ensure_stanza()


@task(name="read-backup-catalog", retries=2, retry_delay_seconds=3)
def read_catalog(target: BackupTarget) -> Catalog:
    return _engine(target).catalog()


@task(name="choose-backup-type")
def choose_type(
    catalog: Catalog, policy: PhysicalBackupPolicy, forced: BackupType | None
) -> tuple[BackupType, str]:
    if forced is not None:
        return forced, "asked for"
    return choose_backup_type(
        datetime.now(UTC), catalog.in_repository(1), policy.full_every, policy.diff_every
    )


@task(name="physical-backup", retries=1, retry_delay_seconds=10)
def take_physical_backup(
    target: BackupTarget, backup_type: BackupType, repository: int
) -> PhysicalBackup:
    """pgbackrest backup into one repository (a retry resumes the interrupted one)."""
    return _engine(target).backup(backup_type, repository)


@task(name="verify-repository", retries=1, retry_delay_seconds=5)
def verify_repository(target: BackupTarget, repository: int) -> None:
    _engine(target).verify(repository)


@task(name="expire-physical-backups")
def expire_backups(
    target: BackupTarget, policy: PhysicalBackupPolicy, dry_run: bool
) -> PhysicalRetentionOutcome:
    """Full backups neither among the newest `keep_full` nor needed by the recovery window go,
    with their differentials, incrementals and the WAL only they needed, in every repository."""
    engine = _engine(target)
    catalog = engine.catalog()
    kept: dict[str, str] = {}
    expired: list[str] = []
    for repository in engine.access.repositories:
        plan = plan_retention(
            datetime.now(UTC),
            catalog.in_repository(repository),
            policy.keep_full,
            policy.recovery_window,
        )
        kept.update({f"repo{repository}/{label}": why for label, why in plan.reasons.items()})
        for label in plan.expire:
            if not dry_run:
                engine.expire(label, repository)
            expired.append(f"repo{repository}/{label}")
    return PhysicalRetentionOutcome(dry_run=dry_run, kept=kept, expired=expired)


@task(name="archive-current-wal", retries=2, retry_delay_seconds=5)
def archive_current_wal(target: BackupTarget) -> None:
    """pgbackrest check: a WAL switch, and the segment seen in every repository."""
    _engine(target).check()


@task(name="record-recovery-marker", retries=2, retry_delay_seconds=5)
def take_marker(target: BackupTarget) -> RecoveryMarker:
    marker = record_marker(target)
    backup_records.store_marker(target.store, marker)
    return marker


@task(name="list-recovery-markers")
def list_markers(target: BackupTarget) -> list[RecoveryMarker]:
    return backup_records.list_markers(target.store, target.environment, get_run_logger())


@task(name="recover-cluster")
def recover_cluster(
    target: BackupTarget,
    kind: RecoveryTargetKind,
    value: str | None,
    restore_dir: str | None,
    port: int,
) -> dict[str, Any]:
    """pgbackrest restore (delta into an earlier restore) and the server started, promoted."""
    return recover(
        target,
        kind,
        value,
        Path(restore_dir) if restore_dir else None,
        port,
        log=get_run_logger(),
    )


@task(name="stop-recovered-server", retries=1)
def stop_recovered(data_dir: str) -> None:
    stop_restored_server(Path(data_dir))


@task(name="record-drill", retries=2, retry_delay_seconds=3)
def record_drill(target: BackupTarget, record: DrillRecord) -> None:
    """Kept in the bucket (the release guard reads it) and pushed as Prometheus metrics."""
    backup_records.store_drill(target.store, record)
    push_backup_metrics(target, "socialnet_pitr_drill", drill_metrics(record))


def push_backup_metrics(target: BackupTarget, job: str, samples: dict[str, float]) -> None:
    """Best effort: a Pushgateway that does not answer costs a warning, not the backup."""
    if target.metrics_url is None:
        return
    try:
        backup_records.push_metrics(target.metrics_url, target.environment, job, samples)
    except OSError as error:
        get_run_logger().warning("metrics not pushed to %s: %s", target.metrics_url, error)


@task(name="read-last-drill")
def read_last_drill(target: BackupTarget) -> DrillRecord | None:
    return backup_records.last_drill(target.store, target.environment, get_run_logger())


@task(name="check-backup-guard", retries=1, retry_delay_seconds=3)
def backup_guard_problems(target: BackupTarget, policy: PhysicalBackupPolicy) -> list[str]:
    """Why a release must not start: WAL archiving failing, the last backup or the last drill
    too old or failed (empty: it may start)."""
    return release_guard_problems(
        datetime.now(UTC),
        archiving_problem=read_archiver_status(target.database)["problem"],
        last_backup=_engine(target).catalog().latest(1),
        max_backup_age_s=policy.max_backup_age,
        last_drill=backup_records.last_drill(target.store, target.environment, get_run_logger()),
        max_drill_age_s=policy.max_drill_age,
    )


@task(name="create-restore-point", retries=2, retry_delay_seconds=3)
def mark_restore_point(target: BackupTarget, name: str) -> RestorePoint:
    """pg_create_restore_point, recorded in the bucket: `restore --restore-point` can stop there
    (a rerun makes a second point of the same name; recovery stops at the first)."""
    point = RestorePoint(
        name=name, created_at=datetime.now(UTC), lsn=create_restore_point(target.database, name)
    )
    backup_records.store_restore_point(target.store, target.environment, point)
    return point
