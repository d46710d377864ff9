"""backup: a logical dump to S3 on the policy's schedule; base-backup: the physical one, by
pgBackRest, for point-in-time recovery; backup-marker: a recorded moment the PITR drill proves.

The dump is the portable backup: streamed with its SHA-256, described by a manifest written only
once it is complete (row counts per table of the very snapshot dumped), pruned
grandfather-father-son, and restored for real by the restore drill (flows/restore.py). The
physical backups are pgBackRest's (full, differential, incremental; encrypted; verified; copied
to a second bucket), proven by the point-in-time drill.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.concurrency.sync import concurrency
from prefect.runtime import flow_run

from flows.common import StepClock, checked_environment, failure_of, release_limit
from socialnet_ops.core.backups import BackupError, BackupManifest, BackupTarget, Trigger
from socialnet_ops.core.environments import BackupPolicy, Environment
from socialnet_ops.core.failures import before_any_change, changed_nothing, one_line
from socialnet_ops.core.physical_backups import BackupType
from socialnet_ops.core.results import BackupResult, BaseBackupResult, MarkerResult
from tasks.ledger import read_ledger, record_backup
from tasks.physical_backups import (
    choose_type,
    engine_repositories,
    expire_backups,
    prepare_engine,
    push_backup_metrics,
    read_catalog,
    take_marker,
    take_physical_backup,
    verify_repository,
)
from tasks.postgres import (
    LEDGER_WAIT_SECONDS,
    apply_retention,
    backup_lock,
    dump_database,
    resolve_backup_target,
    resolve_control_plane_target,
    wal_archiver_status,
)
from tasks.reporting import emit, publish
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


@flow(name="backup", flow_run_name="backup-{env}", on_failure=[announce_backup_failure])
def backup(
    env: str,
    trigger: Trigger = "scheduled",
    release: str | None = None,
    retention_dry_run: bool = False,
    target: BackupTarget | None = None,
) -> BackupResult:
    """pg_dump → S3 (streamed, checksummed, encrypted), then GFS retention; `target` overrides
    where the database and bucket are (default: the environment's platform and policy)."""
    with before_any_change():
        policy = backup_policy(checked_environment(env))
    target = target or resolve_backup_target(env)
    if release is None:
        stable = read_ledger(env).stable
        release = stable.version if stable else None
    return dump_and_prune(target, policy, trigger, release, retention_dry_run, ledger_of=env)


@flow(
    name="control-plane-backup",
    flow_run_name="control-plane-backup-{env}",
    on_failure=[announce_backup_failure],
)
def control_plane_backup(env: str = "local", trigger: Trigger = "scheduled") -> BackupResult:
    """The control plane's own database (every run, deployment, automation and the ledgers, which
    are Prefect variables) dumped into the bucket of `env`'s backups, pruned by `env`'s policy.

    It runs on the control plane's machine: only there can it read Prefect's database."""
    with before_any_change():
        policy = backup_policy(checked_environment(env))
        target = resolve_control_plane_target(env)
    return dump_and_prune(target, policy, trigger, None, False, ledger_of=None)


def dump_and_prune(
    target: BackupTarget,
    policy: BackupPolicy,
    trigger: Trigger,
    release: str | None,
    retention_dry_run: bool,
    ledger_of: str | None,
) -> BackupResult:
    """One dump into the target's bucket, the retention of `policy`, and, for an environment's
    own database, its ledger's last backup."""
    clock = StepClock()
    ensure_bucket(target.store)
    with backup_lock(target.environment):
        with clock("dump and upload"):
            manifest = dump_database(target, trigger, release)
        with clock("retention"):
            retention = apply_retention(target, "dump", policy.retention, retention_dry_run)
    recorded = record_last_backup(ledger_of, manifest) if ledger_of else False
    return publish(
        BackupResult(
            environment=ledger_of or target.environment,
            flow_run_id=flow_run.get_id(),
            backup_id=manifest.id,
            trigger=trigger,
            key=manifest.key,
            bucket=target.store.bucket,
            encryption=manifest.encryption,
            database=manifest.database,
            release=release,
            schema_revision=manifest.schema_revision,
            size_bytes=manifest.size_bytes,
            sha256=manifest.sha256,
            duration_s=manifest.duration_s,
            throughput_mib_s=manifest.throughput_mib_s,
            row_counts=manifest.row_counts,
            retention=retention,
            ledger_updated=recorded,
            timings=clock.rows(),
        )
    )


@flow(name="base-backup", flow_run_name="base-backup-{env}", on_failure=[announce_backup_failure])
def base_backup(
    env: str,
    backup_type: BackupType | None = None,
    retention_dry_run: bool = False,
    target: BackupTarget | None = None,
) -> BaseBackupResult:
    """pgBackRest: a full, differential or incremental backup (the policy's ages choose unless
    `backup_type` says), verified, then the same into the copy repository, then retention."""
    with before_any_change():
        policy = backup_policy(checked_environment(env)).physical
    logger = get_run_logger()
    target = target or resolve_backup_target(env)
    ensure_bucket(target.store)
    if policy.copy_bucket:
        ensure_bucket(target.store.model_copy(update={"bucket": policy.copy_bucket}))
    archiver = wal_archiver_status(target)
    if archiver["problem"]:
        # The backup is still worth taking; recovery past the failure point is not possible.
        logger.error("%s", archiver["problem"])
        emit("backup.wal_archiving.failed", env, problem=archiver["problem"])
    with backup_lock(target.environment):
        prepare_engine(target)
        chosen, reason = choose_type(read_catalog(target), policy, backup_type)
        primary = take_physical_backup(target, chosen, 1)
        verify_repository(target, 1)
        copies = {"repo1": primary.label}
        for repository in engine_repositories(target)[1:]:
            copies[f"repo{repository}"] = take_physical_backup(target, chosen, repository).label
            verify_repository(target, repository)
        retention = expire_backups(target, policy, retention_dry_run)
    push_backup_metrics(
        target,
        "socialnet_backup",
        {"socialnet_backup_last_success_timestamp_seconds": primary.stopped_at.timestamp()},
    )
    return publish(
        BaseBackupResult(
            environment=env,
            flow_run_id=flow_run.get_id(),
            backup_label=primary.label,
            backup_type=primary.type,
            type_reason=reason,
            repositories=copies,
            started_at=primary.started_at.isoformat(),
            duration_s=primary.duration_s,
            size_bytes=primary.size_bytes,
            stored_bytes=primary.stored_bytes,
            wal_start=primary.wal_start,
            wal_stop=primary.wal_stop,
            verified=True,
            archiving_problem=archiver["problem"],
            retention=retention,
        )
    )


@flow(name="backup-marker", flow_run_name="backup-marker-{env}")
def backup_marker(env: str, target: BackupTarget | None = None) -> MarkerResult:
    """Record what the database holds now (row counts and checksums, writes held off for the
    moment of reading): the point-in-time drill recovers to such a moment and compares."""
    checked_environment(env)
    target = target or resolve_backup_target(env)
    ensure_bucket(target.store)
    marker = take_marker(target)
    return MarkerResult(
        environment=env,
        flow_run_id=flow_run.get_id(),
        taken_at=marker.taken_at.isoformat(),
        key=marker.key(),
        tables=len(marker.row_counts),
        rows=sum(marker.row_counts.values()),
        checksum=marker.checksum,
    )
