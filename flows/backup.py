"""backup: a logical dump to S3 on the policy's schedule; base-backup: the physical one for PITR.

Every backup is verifiable: streamed with its SHA-256, described by a manifest written only once
it is complete (row counts per table of the very snapshot dumped), pruned grandfather-father-son,
and restored for real by the restore drill (flows/restore.py).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.concurrency.sync import concurrency

from flows.common import StepClock, checked_environment, failure_of, release_limit
from socialnet_ops.core.backups import BackupError, BackupManifest, BackupTarget, Trigger
from socialnet_ops.core.environments import BackupPolicy, Environment
from socialnet_ops.core.failures import before_any_change, changed_nothing, one_line
from tasks.ledger import read_ledger, record_backup
from tasks.postgres import (
    LEDGER_WAIT_SECONDS,
    apply_retention,
    backup_lock,
    dump_database,
    resolve_backup_target,
    take_base_backup,
    wal_archiver_status,
)
from tasks.reporting import artifact_key, emit, markdown_report
from tasks.storage import ensure_bucket


def backup_policy(environment: Environment) -> BackupPolicy:
    if environment.backup is None:
        raise BackupError(
            f"deployments/environments/{environment.name}.yaml: backup: no backup policy; add "
            "one (schedule, bucket, retention) to back this environment up"
        )
    return environment.backup


def announce_backup_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """on_failure hook: `socialnet.backup.failed` with the reason, for alerting automations;
    `socialnet.backup.rejected` (which pages nobody) when the run refused its input."""
    error = failure_of(state)
    parameters = flow_run.parameters
    emit(
        "backup.rejected" if changed_nothing(error, state.message) else "backup.failed",
        str(parameters.get("env", "unknown")),
        flow=flow.name,
        trigger=parameters.get("trigger", "scheduled"),
        reason=one_line(error if error is not None else str(state.message or "")),
    )


def record_last_backup(env: str, manifest: BackupManifest) -> bool:
    """Write the ledger under the release slot (a deploy writes it too); never wait long for it."""
    try:
        with concurrency(
            release_limit(env), occupy=1, strict=True, timeout_seconds=LEDGER_WAIT_SECONDS
        ):
            record_backup(env, manifest.ledger_entry())
        return True
    except TimeoutError:
        get_run_logger().warning(
            "a release holds %s: the ledger keeps its previous last backup; the manifest in the "
            "bucket is the record of %s",
            release_limit(env),
            manifest.id,
        )
        return False


def _retention_lines(retention: dict[str, Any]) -> list[str]:
    verb = "would delete" if retention["dry_run"] else "deleted"
    lines = [f"{verb} {backup_id}" for backup_id in retention["deleted"]]
    if retention["deleted_wal"]:
        lines.append(f"{verb} {len(retention['deleted_wal'])} WAL segments")
    return lines or ["nothing to delete"]


@flow(name="backup", flow_run_name="backup-{env}", on_failure=[announce_backup_failure])
def backup(
    env: str,
    trigger: Trigger = "scheduled",
    release: str | None = None,
    retention_dry_run: bool = False,
    target: BackupTarget | None = None,
) -> dict[str, Any]:
    """pg_dump → S3 (streamed, checksummed, encrypted), then GFS retention; `target` overrides
    where the database and bucket are (default: the environment's platform and policy)."""
    with before_any_change():
        policy = backup_policy(checked_environment(env))
    clock = StepClock()
    target = target or resolve_backup_target(env)
    ensure_bucket(target.store)
    if release is None:
        stable = read_ledger(env).stable
        release = stable.version if stable else None
    with backup_lock(target.environment):
        with clock("dump and upload"):
            manifest = dump_database(target, trigger, release)
        with clock("retention"):
            retention = apply_retention(target, "dump", policy.retention, retention_dry_run)
    recorded = record_last_backup(env, manifest)
    markdown_report(
        artifact_key("backup", env),
        f"Backup {manifest.id} of {env}",
        {
            "object": f"s3://{target.store.bucket}/{manifest.key} (SSE {manifest.encryption})",
            "database": f"{manifest.database}, release {release or 'unknown'}, schema revision "
            f"{manifest.schema_revision or 'none'}",
            "size": f"{manifest.size_bytes} bytes ({manifest.size_bytes / 1048576:.1f} MiB)",
            "duration": f"{manifest.duration_s} s",
            "throughput": f"{manifest.throughput_mib_s} MiB/s",
            "sha256": manifest.sha256,
            "rows": [f"{table}: {count}" for table, count in manifest.row_counts.items()],
            "retention": _retention_lines(retention),
            "ledger": "updated" if recorded else "not updated (a release held the slot)",
            "timings": clock.rows(),
        },
    )
    emit(
        "backup.completed",
        env,
        backup_id=manifest.id,
        kind="dump",
        trigger=trigger,
        key=manifest.key,
        size_bytes=manifest.size_bytes,
        sha256=manifest.sha256,
        duration_s=manifest.duration_s,
        release=release,
        deleted=retention["deleted"],
    )
    return {
        "environment": env,
        "backup_id": manifest.id,
        "key": manifest.key,
        "size_bytes": manifest.size_bytes,
        "sha256": manifest.sha256,
        "duration_s": manifest.duration_s,
        "row_counts": manifest.row_counts,
        "retention": retention,
    }


@flow(name="base-backup", flow_run_name="base-backup-{env}", on_failure=[announce_backup_failure])
def base_backup(
    env: str, retention_dry_run: bool = False, target: BackupTarget | None = None
) -> dict[str, Any]:
    """pg_basebackup → S3, then retention of base backups and of the WAL none of them needs."""
    with before_any_change():
        policy = backup_policy(checked_environment(env))
    logger = get_run_logger()
    target = target or resolve_backup_target(env)
    ensure_bucket(target.store)
    archiver = wal_archiver_status(target)
    if archiver["problem"]:
        # The base backup is still worth taking; recovery past the failure point is not possible.
        logger.error("%s", archiver["problem"])
        emit("backup.wal_archiving.failed", env, problem=archiver["problem"])
    with backup_lock(target.environment):
        manifest = take_base_backup(target)
        retention = apply_retention(target, "base", policy.retention, retention_dry_run)
    markdown_report(
        artifact_key("base-backup", env),
        f"Base backup {manifest.id} of {env}",
        {
            "object": f"s3://{target.store.bucket}/{manifest.key} (SSE {manifest.encryption})",
            "size": f"{manifest.size_bytes} bytes",
            "duration": f"{manifest.duration_s} s ({manifest.throughput_mib_s} MiB/s)",
            "sha256": manifest.sha256,
            "WAL": f"needs {manifest.start_wal} onwards from s3://{target.store.bucket}/"
            f"{target.wal_prefix}",
            "archiving": archiver["problem"]
            or f"healthy, last archived {archiver.get('last_archived_wal')}",
            "retention": _retention_lines(retention),
        },
    )
    emit(
        "backup.completed",
        env,
        backup_id=manifest.id,
        kind="base",
        key=manifest.key,
        size_bytes=manifest.size_bytes,
        sha256=manifest.sha256,
        duration_s=manifest.duration_s,
        deleted=retention["deleted"],
        deleted_wal=len(retention["deleted_wal"]),
    )
    return {
        "environment": env,
        "backup_id": manifest.id,
        "key": manifest.key,
        "start_wal": manifest.start_wal,
        "size_bytes": manifest.size_bytes,
        "archiving_problem": archiver["problem"],
        "retention": retention,
    }
