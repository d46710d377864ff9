"""What flows return: one typed result per flow, which also says its report and its event.

A flow builds its result once; `tasks.reporting.publish` turns it into the run's markdown artifact
and its `socialnet.*` event, the CLI renders it (`summary()`, or JSON with --json), and tests read
its fields. Nothing is restated three times.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Report(BaseModel):
    """A markdown artifact: its key, title and sections (a list renders as bullets)."""

    key: str
    title: str
    sections: dict[str, str | list[str]]


class Event(BaseModel):
    """`socialnet.<name>` about the environment, with its payload."""

    name: str
    payload: dict[str, Any]


class FlowResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    environment: str
    flow_run_id: str | None = None

    def report(self) -> Report | None:
        return None

    def event(self) -> Event | None:
        return None

    def summary(self) -> str:
        """One line for a person."""
        return f"{type(self).__name__} of {self.environment}"


class RetentionOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    dry_run: bool
    kept: dict[str, list[str]] = Field(description="kept backup id -> why")
    deleted: list[str]
    deleted_wal: list[str] = Field(default_factory=list)

    def lines(self) -> list[str]:
        verb = "would delete" if self.dry_run else "deleted"
        lines = [f"{verb} {backup_id}" for backup_id in self.deleted]
        if self.deleted_wal:
            lines.append(f"{verb} {len(self.deleted_wal)} WAL segments")
        return lines or ["nothing to delete"]


def artifact_key(*parts: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    raw = "-".join(parts).lower()
    return "".join(char if char.isalnum() else "-" for char in raw).strip("-")


class BackupResult(FlowResult):
    """A logical dump in the environment's bucket, and the retention that followed it."""

    backup_id: str
    trigger: str
    key: str
    bucket: str
    encryption: str
    database: str
    release: str | None
    schema_revision: str | None
    size_bytes: int
    sha256: str
    duration_s: float
    throughput_mib_s: float
    row_counts: dict[str, int]
    retention: RetentionOutcome
    ledger_updated: bool
    timings: list[str] = Field(default_factory=list)

    def report(self) -> Report:
        return Report(
            key=artifact_key("backup", self.environment),
            title=f"Backup {self.backup_id} of {self.environment}",
            sections={
                "object": f"s3://{self.bucket}/{self.key} (SSE {self.encryption})",
                "database": f"{self.database}, release {self.release or 'unknown'}, schema "
                f"revision {self.schema_revision or 'none'}",
                "size": f"{self.size_bytes} bytes ({self.size_bytes / 1048576:.1f} MiB)",
                "duration": f"{self.duration_s} s",
                "throughput": f"{self.throughput_mib_s} MiB/s",
                "sha256": self.sha256,
                "rows": [f"{table}: {count}" for table, count in self.row_counts.items()],
                "retention": self.retention.lines(),
                "ledger": "updated"
                if self.ledger_updated
                else "not updated (a release held the slot)",
                "timings": self.timings,
            },
        )

    def event(self) -> Event:
        return Event(
            name="backup.completed",
            payload={
                "backup_id": self.backup_id,
                "kind": "dump",
                "trigger": self.trigger,
                "key": self.key,
                "size_bytes": self.size_bytes,
                "sha256": self.sha256,
                "duration_s": self.duration_s,
                "release": self.release,
                "deleted": self.retention.deleted,
            },
        )

    def summary(self) -> str:
        return f"backed up {self.environment}: {self.backup_id} ({self.size_bytes} bytes)"


class BaseBackupResult(FlowResult):
    """A base backup (pg_basebackup) and the WAL it needs; point-in-time recovery starts here."""

    backup_id: str
    key: str
    bucket: str
    encryption: str
    start_wal: str | None
    wal_prefix: str
    size_bytes: int
    sha256: str
    duration_s: float
    throughput_mib_s: float
    archiving_problem: str | None
    last_archived_wal: str | None = None
    retention: RetentionOutcome

    def report(self) -> Report:
        return Report(
            key=artifact_key("base-backup", self.environment),
            title=f"Base backup {self.backup_id} of {self.environment}",
            sections={
                "object": f"s3://{self.bucket}/{self.key} (SSE {self.encryption})",
                "size": f"{self.size_bytes} bytes",
                "duration": f"{self.duration_s} s ({self.throughput_mib_s} MiB/s)",
                "sha256": self.sha256,
                "WAL": f"needs {self.start_wal} onwards from s3://{self.bucket}/{self.wal_prefix}",
                "archiving": self.archiving_problem
                or f"healthy, last archived {self.last_archived_wal}",
                "retention": self.retention.lines(),
            },
        )

    def event(self) -> Event:
        return Event(
            name="backup.completed",
            payload={
                "backup_id": self.backup_id,
                "kind": "base",
                "key": self.key,
                "size_bytes": self.size_bytes,
                "sha256": self.sha256,
                "duration_s": self.duration_s,
                "deleted": self.retention.deleted,
                "deleted_wal": len(self.retention.deleted_wal),
            },
        )

    def summary(self) -> str:
        return (
            f"base backup {self.environment}: {self.backup_id} ({self.size_bytes} bytes, WAL from "
            f"{self.start_wal})"
        )


class DeployResult(FlowResult):
    """A release rolled onto an environment's stable track."""

    version: str
    git_sha: str
    ref: str
    previous: str | None
    predeploy_backup: str
    migrations: list[str]
    seconds: dict[str, float]
    slot_taken_at: float
    slot_released_at: float | None

    def report(self) -> Report:
        return Report(
            key=artifact_key("deploy", self.environment),
            title=f"Deployed {self.version} to {self.environment}",
            sections={
                "version": f"{self.version} ({self.git_sha[:12]}, {self.ref})",
                "replaced": self.previous or "nothing (first release)",
                "pre-deploy backup": self.predeploy_backup,
                "migrations": self.migrations or ["none pending"],
                "timings": [f"{step}: {seconds} s" for step, seconds in self.seconds.items()],
            },
        )

    def event(self) -> Event:
        return Event(
            name="release.deployed", payload={"version": self.version, "previous": self.previous}
        )

    def summary(self) -> str:
        return f"deployed {self.version} to {self.environment} (was {self.previous or 'nothing'})"


class RollbackResult(FlowResult):
    """An environment returned to an earlier release (`previous` is what served before)."""

    version: str
    previous: str | None
    reason: str
    seconds: dict[str, float]

    def report(self) -> Report:
        return Report(
            key=artifact_key("rollback", self.environment),
            title=f"Rolled {self.environment} back to {self.version}",
            sections={
                "from": self.previous or "nothing",
                "to": self.version,
                "reason": self.reason,
                "timings": [f"{step}: {seconds} s" for step, seconds in self.seconds.items()],
            },
        )

    def event(self) -> Event:
        return Event(
            name="release.rolled_back",
            payload={"version": self.version, "previous": self.previous, "reason": self.reason},
        )

    def summary(self) -> str:
        return f"rolled back {self.environment} from {self.previous or 'nothing'} to {self.version}"


class VerifiedRestore(FlowResult):
    """A dump restored and verified: checksum, pg_restore's exit, schema revision, row counts."""

    backup_id: str
    size_bytes: int
    sha256: str
    schema_revision: str | None
    tables: int
    rows: int
    seconds: float

    def verification(self) -> str:
        return (
            f"sha256 {self.sha256}, pg_restore exit 0, schema revision "
            f"{self.schema_revision or 'none'}, {self.rows} rows in {self.tables} tables"
        )


class DumpRestoreResult(VerifiedRestore):
    """A dump restored into a database (a new one, or one it replaced)."""

    database: str
    replaced: bool
    previous_database_kept_as: str | None = None

    def report(self) -> Report:
        return Report(
            key=artifact_key("restore", self.environment),
            title=f"Backup {self.backup_id} restored into {self.database}",
            sections={
                "verified": self.verification(),
                "replaced": f"yes, previous kept as {self.previous_database_kept_as}"
                if self.replaced
                else "no (new database)",
                "duration": f"{self.seconds} s",
            },
        )

    def event(self) -> Event:
        return Event(
            name="restore.completed",
            payload={
                "mode": "dump",
                "backup_id": self.backup_id,
                "database": self.database,
                "replaced": self.replaced,
            },
        )

    def summary(self) -> str:
        return (
            f"restored {self.environment}: backup {self.backup_id} into {self.database}, "
            f"verified ({self.rows} rows in {self.tables} tables)"
        )


class PointInTimeRestoreResult(FlowResult):
    """The cluster as it was at `target_time`, running on a private port of this machine."""

    base_backup: str
    target_time: str
    wal_segments: int
    recovery_stop: str | None
    host: str
    port: int
    data_dir: str
    log: str
    stop_with: str
    database: str
    row_counts: dict[str, int]

    def report(self) -> Report:
        return Report(
            key=artifact_key("restore", self.environment),
            title=f"{self.environment} restored to {self.target_time}",
            sections={
                "base backup": self.base_backup,
                "WAL replayed": f"{self.wal_segments} segments",
                "stopped": self.recovery_stop or "at the end of the archived WAL",
                "server": f"{self.host}:{self.port} (data {self.data_dir})",
                "stop it with": self.stop_with,
                "rows": [f"{table}: {count}" for table, count in self.row_counts.items()],
            },
        )

    def event(self) -> Event:
        return Event(
            name="restore.completed",
            payload={
                "mode": "point-in-time",
                "base_backup": self.base_backup,
                "target_time": self.target_time,
                "port": self.port,
            },
        )

    def summary(self) -> str:
        return (
            f"restored {self.environment} as it was at {self.target_time}: from base backup "
            f"{self.base_backup}, {self.wal_segments} WAL segments replayed; serving on "
            f"{self.host}:{self.port}"
        )


class RestoreDrillResult(VerifiedRestore):
    """The latest backup restored into a scratch database, verified and dropped."""

    scratch_database: str

    def report(self) -> Report:
        return Report(
            key=artifact_key("restore-drill", self.environment),
            title=f"Restore drill of {self.environment}: backup {self.backup_id} verified",
            sections={
                "restored": f"{self.size_bytes} bytes into {self.scratch_database} (dropped) in "
                f"{self.seconds} s",
                "verified": self.verification(),
            },
        )

    def event(self) -> Event:
        return Event(
            name="backup.drill.completed",
            payload={"backup_id": self.backup_id, "seconds": self.seconds, "rows": self.rows},
        )

    def summary(self) -> str:
        return (
            f"restore drill of {self.environment}: backup {self.backup_id} verified "
            f"({self.rows} rows in {self.tables} tables)"
        )
