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
