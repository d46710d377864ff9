"""PostgreSQL tasks: schema migrations (Alembic, run from the release's own code), backups to S3
(pg_dump), verified restores; the physical backups (pgBackRest) are in tasks/physical_backups.

The tool work is in the adapters (`migrations`, `pg_backups`, `pg_recovery`, `postgres`); what a
backup *is* (ids, manifests, verification, WAL ranges) is in socialnet_ops.core.backups. Here are
what needs Prefect: the run's logger, the backup lock (a global concurrency limit), the events and
the undo of the pre-deploy backup.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.transactions import Transaction

from socialnet_ops.adapters.builds import load_build
from socialnet_ops.adapters.migrations import pending_migrations, run_alembic
from socialnet_ops.adapters.pg_backups import (
    drop_restored_database,
    dump_to_store,
    prune_backups,
    restore_dump_into,
)
from socialnet_ops.adapters.postgres import read_archiver_status
from socialnet_ops.adapters.s3 import ensure_bucket_exists
from socialnet_ops.core.backups import BackupKind, BackupManifest, BackupTarget, Trigger
from socialnet_ops.core.environments import Retention, load_environment
from socialnet_ops.core.holds import Holds
from socialnet_ops.core.results import RetentionOutcome
from socialnet_ops.platforms import backup_target_for, control_plane_backup_target, platform_for
from tasks.ledger import record_backup
from tasks.reporting import emit
from tasks.undo import recalled, remember, undo_step


def _database_env(environment: str) -> dict[str, str]:
    return platform_for(load_environment(environment)).database_env()


@task(name="check-migrations-expand-only")
def check_migrations(environment: str, version: str, allow_contracting: bool = False) -> list[str]:
    """The SQL the pending migrations would run, refused when it drops, renames or retypes."""
    build = load_build(environment, version)
    return pending_migrations(
        build, _database_env(environment), allow_contracting, log=get_run_logger()
    )


@task(name="migrate-database")
def migrate(environment: str, version: str) -> None:
    """Upgrade the schema to the release's head; Alembic makes a rerun a no-op.

    No Prefect retries: it runs inside the deploy's undo transaction, and a failed migration is
    undone by restoring the pre-deploy backup, not tried again over a half-migrated schema.
    """
    build = load_build(environment, version)
    run_alembic(build, _database_env(environment), "upgrade", "head", log=get_run_logger())


# --- backups and restores ---------------------------------------------------------------------

BACKUP_LOCK_WAIT_SECONDS = 3600
LEDGER_WAIT_SECONDS = 120

# The backup flows take their lock once for backup and retention; the tasks inside run under it
# (one slot taken per flow, not per task).
_HELD_BACKUP_LOCKS = Holds("held_backup_locks")


@contextmanager
def backup_lock(environment: str) -> Iterator[None]:
    """One backup per environment at a time: whatever upload is unfinished under it is stale."""
    if _HELD_BACKUP_LOCKS.holds(environment):
        yield
        return
    name = f"backup-{environment}"
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name=name, limit=1)
    with (
        concurrency(name, occupy=1, strict=True, timeout_seconds=BACKUP_LOCK_WAIT_SECONDS),
        _HELD_BACKUP_LOCKS.holding(environment),
    ):
        yield


def _dump_under_lock(target: BackupTarget, trigger: Trigger, release: str | None) -> BackupManifest:
    with backup_lock(target.environment):
        return dump_to_store(target, trigger, release, log=get_run_logger())


@task(name="dump-database-to-s3")
def dump_database(target: BackupTarget, trigger: Trigger, release: str | None) -> BackupManifest:
    """No automatic retry: a retry is a full new dump; the next scheduled run is that retry."""
    return _dump_under_lock(target, trigger, release)


@task(name="resolve-backup-target")
def resolve_backup_target(environment: str) -> BackupTarget:
    return backup_target_for(load_environment(environment))


@task(name="resolve-control-plane-target")
def resolve_control_plane_target(environment: str) -> BackupTarget:
    """Prefect's database on this machine, kept in the bucket of `environment`'s backups."""
    return control_plane_backup_target(load_environment(environment))


@task(name="take-predeploy-backup")
def take_predeploy_backup(environment: str, version: str) -> dict[str, str]:
    """The backup a deploy takes before migrating; its id goes into the deploy's report."""

    try:
        target = backup_target_for(load_environment(environment))
        ensure_bucket_exists(target.store)
        manifest = _dump_under_lock(target, "pre-deploy", version)
    except Exception as error:
        emit(
            "backup.failed",
            environment,
            trigger="pre-deploy",
            release=version,
            reason=str(error)[:300],
        )
        raise
    record_backup.fn(environment, manifest.ledger_entry())
    emit("backup.completed", environment, **_event_fields(manifest))
    remember(environment=environment, backup_id=manifest.id, version=version)
    return manifest.ledger_entry()


@take_predeploy_backup.on_rollback
def restore_predeploy_backup(txn: Transaction) -> None:
    """Undo of a failed migration: the live database as the pre-deploy backup holds it.

    The damaged database is kept as `<db>_before_restore_<time>` for a post-mortem.
    """
    environment, backup_id = recalled(txn, "environment"), recalled(txn, "backup_id")

    def restore() -> None:
        target = backup_target_for(load_environment(environment))
        logger = get_run_logger()
        restored = restore_dump_into(target, backup_id, target.database.database, True, log=logger)
        logger.warning(
            "restored pre-deploy backup %s over %s (the failed one is kept as %s)",
            backup_id,
            restored["database"],
            restored["previous_database_kept_as"],
        )

    undo_step(f"database of {environment}: pre-deploy backup {backup_id} restored", restore)


def _event_fields(manifest: BackupManifest) -> dict[str, Any]:
    return {
        "backup_id": manifest.id,
        "kind": manifest.kind,
        "trigger": manifest.trigger,
        "key": manifest.key,
        "size_bytes": manifest.size_bytes,
        "sha256": manifest.sha256,
        "duration_s": manifest.duration_s,
        "release": manifest.release,
    }


@task(name="restore-dump")
def restore_dump(
    target: BackupTarget, backup_id: str, database: str, replace: bool
) -> dict[str, Any]:
    return restore_dump_into(target, backup_id, database, replace, log=get_run_logger())


@task(name="drop-database", retries=2, retry_delay_seconds=2)
def drop_database(target: BackupTarget, database: str) -> None:
    drop_restored_database(target, database)


# --- retention ------------------------------------------------------------------------------------


@task(name="apply-retention")
def apply_retention(
    target: BackupTarget, kind: BackupKind, rules: Retention, dry_run: bool = False
) -> RetentionOutcome:
    """GFS over the complete backups of `kind`; base backups also drop WAL no kept base needs."""
    with backup_lock(target.environment):
        return prune_backups(target, kind, rules, dry_run, log=get_run_logger())


# --- physical backups and WAL -------------------------------------------------------------------


@task(name="wal-archiver-status")
def wal_archiver_status(target: BackupTarget) -> dict[str, Any]:
    """pg_stat_archiver, with `problem` set when archiving is failing now."""
    return read_archiver_status(target.database)
