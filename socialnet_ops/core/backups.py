"""Backups as data: where they are, what a manifest records, how a restore is judged. No Prefect.

Layout of an environment's bucket:

    backups/<env>/<db>/<id>.dump    pg_dump custom format, SSE AES256
    backups/<env>/<db>/<id>.json    its manifest, written only once the dump is complete:
                                    an object without a manifest is not a backup
    basebackups/<env>/<id>.tar      pg_basebackup tar (WAL to reach consistency included)
    basebackups/<env>/<id>.json     its manifest (start/stop WAL segment, times)
    wal/<env>/<segment>             WAL archived by PostgreSQL's archive_command

A point in time T is recoverable from the newest base backup finished before T plus every WAL
segment from that backup's start up to the first segment archived at or after T.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from socialnet_ops.core.failures import RejectedError
from socialnet_ops.core.retention import BackupPoint

if TYPE_CHECKING:
    pass

Trigger = Literal["scheduled", "pre-deploy", "manual"]
BackupKind = Literal["dump", "base"]


class BackupError(Exception):
    """A backup or restore that cannot go on; the message names the object and the way out."""


class BackupNotFoundError(BackupError, RejectedError):
    pass


class VerificationError(BackupError):
    """The restored data does not match what the backup recorded; the target was not touched."""


class OutsideRecoveryWindowError(BackupError, RejectedError):
    """The asked time cannot be recovered to: refused before anything is created."""


class WalGapError(BackupError):
    """The WAL archive lacks a segment the requested recovery needs."""


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- where the database and the bucket are ----------------------------------------------------


class DatabaseAccess(Model):
    """How to reach a database; the password stays in its file and only enters a child's env."""

    host: str
    port: int
    user: str
    database: str
    password_file: str | None = None
    # The role that owns the app's objects when the login role is only a member of it: restores
    # create objects as that role (pg_restore --role), so the app keeps owning its tables.
    owner_role: str | None = None

    @classmethod
    def from_socialnet_env(cls, env: Mapping[str, str]) -> DatabaseAccess:
        """From the `SOCIALNET_DB_*` settings a platform's `database_env()` gives."""
        try:
            return cls(
                host=env["SOCIALNET_DB_HOST"],
                port=int(env["SOCIALNET_DB_PORT"]),
                user=env["SOCIALNET_DB_USER"],
                database=env["SOCIALNET_DB_NAME"],
                password_file=env.get("SOCIALNET_DB_PASSWORD_FILE") or None,
                owner_role=env.get("SOCIALNET_DB_OWNER") or None,
            )
        except KeyError as missing:
            raise BackupError(f"database settings lack {missing.args[0]}") from None

    def password(self) -> str | None:
        if not self.password_file:
            return None
        try:
            return Path(self.password_file).read_text().strip()
        except OSError as error:
            raise BackupError(
                f"cannot read the database password file {self.password_file}: {error.strerror}"
            ) from None

    def libpq_env(self, database: str | None = None) -> dict[str, str]:
        """PG* variables for pg_dump/pg_restore/psql children (never logged, never a parameter)."""
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": database or self.database,
            "PGAPPNAME": "socialnet-backup",
            "PGCONNECT_TIMEOUT": "10",
        }
        password = self.password()
        if password:
            env["PGPASSWORD"] = password
        return env

    def connect_kwargs(self, database: str | None = None) -> dict[str, Any]:
        """Keyword arguments for psycopg.connect."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": database or self.database,
            "application_name": "socialnet-backup",
            "connect_timeout": 10,
        }
        password = self.password()
        if password:
            kwargs["password"] = password
        return kwargs

    def describe(self, database: str | None = None) -> str:
        return f"{self.user}@{self.host}:{self.port}/{database or self.database}"


class ObjectStore(Model):
    bucket: str
    region: str = "eu-west-3"
    endpoint_url: str | None = None  # None: the provider's own endpoint
    create_bucket: bool = False  # only for the emulator; real buckets come from Terraform


class BackupTarget(Model):
    """Everything a backup or restore run needs to know about one environment's data."""

    environment: str
    database: DatabaseAccess
    store: ObjectStore
    # What keys are named after: the policy's database name.
    database_label: str = Field(default="socialnet", pattern=r"^[A-Za-z0-9_.-]+$")

    @property
    def dump_prefix(self) -> str:
        return f"backups/{self.environment}/{self.database_label}/"

    @property
    def base_prefix(self) -> str:
        return f"basebackups/{self.environment}/"

    @property
    def wal_prefix(self) -> str:
        return f"wal/{self.environment}/"

    def data_key(self, kind: BackupKind, backup_id: str) -> str:
        if kind == "dump":
            return f"{self.dump_prefix}{backup_id}.dump"
        return f"{self.base_prefix}{backup_id}.tar"

    def manifest_key(self, kind: BackupKind, backup_id: str) -> str:
        prefix = self.dump_prefix if kind == "dump" else self.base_prefix
        return f"{prefix}{backup_id}.json"


# --- ids and manifests ---------------------------------------------------------------------------

_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{4}$")


def new_backup_id(at: datetime | None = None) -> str:
    """`20260107T030000Z-3fa1`: sorts by time; the suffix separates two backups of one second."""
    moment = (at or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def is_backup_id(value: str) -> bool:
    return bool(_ID.match(value))


class BackupManifest(Model):
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    kind: BackupKind
    trigger: Trigger = "scheduled"
    environment: str
    database: str
    key: str
    format: str
    release: str | None = None
    schema_revision: str | None = None
    server_version: str | None = None
    size_bytes: int
    sha256: str
    started_at: datetime
    finished_at: datetime
    duration_s: float
    row_counts: dict[str, int] = Field(default_factory=dict)
    encryption: str = "AES256"
    # Base backups: the WAL they need, first segment (conservative) and last.
    start_wal: str | None = None
    stop_wal: str | None = None
    # Settings a recovering server must not set lower than its source (kept in pg_control).
    server_settings: dict[str, str] = Field(default_factory=dict)

    @property
    def throughput_mib_s(self) -> float:
        return round(self.size_bytes / 1048576 / max(self.duration_s, 0.001), 1)

    def point(self) -> BackupPoint:
        return BackupPoint(
            id=self.id, taken_at=self.started_at, trigger=self.trigger, release=self.release
        )

    def ledger_entry(self) -> dict[str, str]:
        """What the release ledger keeps of the last backup (flat strings)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "trigger": self.trigger,
            "key": self.key,
            "sha256": self.sha256,
            "size_bytes": str(self.size_bytes),
            "finished_at": self.finished_at.isoformat(),
            "release": self.release or "",
            "schema_revision": self.schema_revision or "",
        }


def object_metadata(
    *,
    backup_id: str,
    environment: str,
    database: str,
    release: str | None,
    schema_revision: str | None,
    started_at: datetime,
) -> dict[str, str]:
    """S3 user metadata, fixed when the upload starts; size/checksum/end live in the manifest."""
    return {
        "backup-id": backup_id,
        "environment": environment,
        "database": database,
        "release": release or "",
        "schema-revision": schema_revision or "",
        "started-at": started_at.isoformat(),
    }


def pick_manifest(manifests: Iterable[BackupManifest], wanted: str) -> BackupManifest:
    """`wanted` is an id or "latest"; complete backups only (those with a manifest)."""
    ordered = sorted(manifests, key=lambda manifest: (manifest.started_at, manifest.id))
    if not ordered:
        raise BackupNotFoundError("there is no complete backup yet; run the backup flow first")
    if wanted == "latest":
        return ordered[-1]
    for manifest in ordered:
        if manifest.id == wanted:
            return manifest
    known = ", ".join(manifest.id for manifest in ordered[-5:])
    raise BackupNotFoundError(f"no complete backup {wanted!r}; the newest are: {known}")


def backup_id(backup: dict[str, str] | None) -> str | None:
    """The id in a pre-deploy backup's ledger entry (`BackupManifest.ledger_entry`), if any."""
    return backup.get("id") if backup else None


def backup_name(backup: dict[str, str] | None) -> str:
    """How a release report names its pre-deploy backup."""
    if backup is None:
        return "none (the environment has no backup policy)"
    return f"{backup.get('id')} (s3 key {backup.get('key')}, sha256 {str(backup.get('sha256', ''))[:16]}…)"


# --- verification ----------------------------------------------------------------------------


def compare_row_counts(expected: Mapping[str, int], actual: Mapping[str, int]) -> list[str]:
    """Differences between the counts recorded at backup time and those restored."""
    problems = []
    for table in sorted(set(expected) | set(actual)):
        if table not in actual:
            problems.append(f"{table}: missing after restore (had {expected[table]} rows)")
        elif table not in expected:
            problems.append(f"{table}: not in the backup's manifest ({actual[table]} rows)")
        elif expected[table] != actual[table]:
            problems.append(f"{table}: {actual[table]} rows restored, {expected[table]} backed up")
    return problems


def verification_problems(
    manifest: BackupManifest,
    *,
    size_bytes: int,
    sha256: str,
    schema_revision: str | None,
    row_counts: Mapping[str, int],
) -> list[str]:
    problems = []
    if size_bytes != manifest.size_bytes:
        problems.append(
            f"size: downloaded {size_bytes} bytes, the manifest records {manifest.size_bytes} "
            "(truncated or replaced object)"
        )
    if sha256 != manifest.sha256:
        problems.append(
            f"checksum: SHA-256 {sha256[:16]}… differs from the recorded {manifest.sha256[:16]}…"
        )
    if schema_revision != manifest.schema_revision:
        problems.append(
            f"schema revision: restored {schema_revision!r}, backed up {manifest.schema_revision!r}"
        )
    problems += compare_row_counts(manifest.row_counts, row_counts)
    return problems


# --- WAL segments and point-in-time recovery -------------------------------------------------------

RECOVERY_CRITICAL_SETTINGS = (
    "max_connections",
    "max_worker_processes",
    "max_wal_senders",
    "max_prepared_transactions",
    "max_locks_per_transaction",
)
SEGMENTS_PER_XLOGID = 0x100  # 16 MiB segments: 0x100000000 / 0x1000000
_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")


@dataclass(frozen=True, order=True)
class Segment:
    timeline: int
    number: int

    @classmethod
    def parse(cls, name: str) -> Segment:
        match = _SEGMENT.match(name)
        if not match:
            raise ValueError(f"{name!r} is not a WAL segment name")
        timeline, log, seg = (int(part, 16) for part in match.groups())
        return cls(timeline, log * SEGMENTS_PER_XLOGID + seg)

    @property
    def name(self) -> str:
        log, seg = divmod(self.number, SEGMENTS_PER_XLOGID)
        return f"{self.timeline:08X}{log:08X}{seg:08X}"


def is_segment_name(name: str) -> bool:
    return bool(_SEGMENT.match(name))


@dataclass(frozen=True)
class ArchivedSegment:
    name: str
    archived_at: datetime


@dataclass(frozen=True)
class RecoveryPlan:
    base: BackupManifest
    segments: list[str]  # from the base backup's start to the first archived at/after the target
    target: datetime


def recoverable_window(
    bases: Iterable[BackupManifest], wal: Iterable[ArchivedSegment]
) -> tuple[datetime, datetime] | None:
    """From the end of the oldest base backup to the last archived segment (None: nothing yet)."""
    finished = [base.finished_at for base in bases]
    archived = [segment.archived_at for segment in wal]
    if not finished or not archived or max(archived) < min(finished):
        return None
    return min(finished), max(archived)


def plan_recovery(
    target: datetime, bases: Iterable[BackupManifest], wal: Iterable[ArchivedSegment]
) -> RecoveryPlan:
    """The base backup and the WAL segments a recovery to `target` needs; errors say the window."""
    if target.tzinfo is None:
        raise OutsideRecoveryWindowError(
            f"target time {target.isoformat()} has no time zone; give it in UTC"
        )
    bases = sorted(bases, key=lambda base: base.finished_at)
    archived = sorted(
        (segment for segment in wal if is_segment_name(segment.name)),
        key=lambda segment: Segment.parse(segment.name),
    )
    window = recoverable_window(bases, archived)
    span = f"{window[0].isoformat()} to {window[1].isoformat()}" if window else "empty"
    candidates = [base for base in bases if base.finished_at <= target]
    if not candidates:
        raise OutsideRecoveryWindowError(
            f"no base backup finished before {target.isoformat()}; the recoverable window is {span}"
        )
    base = candidates[-1]
    if base.start_wal is None:
        raise BackupError(f"base backup {base.id} does not record its start WAL segment")
    start = Segment.parse(base.start_wal)
    by_number = {
        Segment.parse(segment.name).number: segment
        for segment in archived
        if Segment.parse(segment.name).timeline == start.timeline
    }
    needed: list[str] = []
    number = start.number
    last_number = max(by_number, default=start.number - 1)
    while True:
        segment = by_number.get(number)
        if segment is None:
            name = Segment(start.timeline, number).name
            if number > last_number:
                raise OutsideRecoveryWindowError(
                    f"{target.isoformat()} is after the last archived WAL "
                    f"({archived[-1].archived_at.isoformat() if archived else 'none'}); the "
                    f"recoverable window is {span}"
                )
            raise WalGapError(
                f"WAL segment {name} is missing from the archive; recovery from base backup "
                f"{base.id} cannot go past it (restore to a time before it was written, or take "
                "a new base backup)"
            )
        needed.append(segment.name)
        if segment.archived_at >= target:
            return RecoveryPlan(base=base, segments=needed, target=target)
        number += 1


def wal_to_delete(kept_bases: Iterable[BackupManifest], archived: Iterable[str]) -> list[str]:
    """Archived WAL older than the oldest kept base backup needs (history files stay)."""
    starts = [Segment.parse(base.start_wal) for base in kept_bases if base.start_wal]
    if not starts:
        return []  # without a base backup nothing says which WAL is useless: keep it all
    oldest = min(start.number for start in starts)
    doomed = []
    for name in archived:
        stem = name.split(".", 1)[0]
        if is_segment_name(stem) and Segment.parse(stem).number < oldest:
            doomed.append(name)  # a segment, or the `.backup` label of an older base backup
    return sorted(doomed)


# --- WAL archiving settings for a PostgreSQL server ---------------------------------------------

# The archive command PostgreSQL runs (a file path, not an import: it runs under Debian's python3).
WAL_ARCHIVE_SCRIPT = Path(__file__).parents[1] / "adapters" / "wal_archive.py"


def _interpreter() -> str:
    """A python3 the database's system user can run (the project venv may sit under /root)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    return sys.executable


def wal_command(action: Literal["push", "fetch"], store: ObjectStore, prefix: str) -> str:
    """archive_command (push) or restore_command (fetch) for PostgreSQL's configuration."""
    arguments = "%p %f" if action == "push" else "%f %p"
    options = f"--bucket {store.bucket} --prefix {prefix} --region {store.region} --quiet"
    if store.endpoint_url:
        options += f" --endpoint-url {store.endpoint_url}"
    return f"{_interpreter()} {WAL_ARCHIVE_SCRIPT} {action} {arguments} {options}"


def archiving_settings(store: ObjectStore, environment: str, timeout_s: int = 60) -> list[str]:
    """`name=value` settings (for `postgres -c`) that archive an environment's WAL to its bucket."""
    return [
        "wal_level=replica",
        "archive_mode=on",
        f"archive_command={wal_command('push', store, f'wal/{environment}')}",
        # A quiet database still closes a segment this often, bounding what a PITR can lose.
        f"archive_timeout={timeout_s}",
    ]


def archiver_problem(stats: Mapping[str, Any]) -> str | None:
    """From a `pg_stat_archiver` row: why archiving is failing now, or None when it is healthy."""
    failed_at = stats.get("last_failed_time")
    if not failed_at:
        return None
    archived_at = stats.get("last_archived_time")
    if archived_at and archived_at >= failed_at:
        return None  # failed once, then recovered
    return (
        f"WAL archiving is failing: {stats.get('failed_count', '?')} failures, last on "
        f"{stats.get('last_failed_wal')} at {failed_at}; point-in-time recovery stops at "
        f"{archived_at or 'nothing archived yet'}"
    )
