"""Backups as data: where they are, what a manifest records, how a restore is judged. No Prefect.

Layout of an environment's bucket:

    backups/<env>/<db>/<id>.dump    pg_dump custom format, SSE AES256
    backups/<env>/<db>/<id>.json    its manifest, written only once the dump is complete:
                                    an object without a manifest is not a backup
    pgbackrest/<env>/               pgBackRest's repository (physical backups and WAL; its
                                    own format, encrypted): core.physical_backups
    markers/<env>/<time>.json       recovery markers the point-in-time drill recovers to
    drills/<env>/<id>.json          outcomes of the point-in-time drills
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from socialnet_ops.core.failures import RejectedError
from socialnet_ops.core.retention import BackupPoint

Trigger = Literal["scheduled", "pre-deploy", "manual"]
BackupKind = Literal["dump"]


class BackupError(Exception):
    """A backup or restore that cannot go on; the message names the object and the way out."""


class BackupNotFoundError(BackupError, RejectedError):
    pass


class VerificationError(BackupError):
    """The restored data does not match what the backup recorded; the target was not touched."""


class OutsideRecoveryWindowError(BackupError, RejectedError):
    """The asked time cannot be recovered to: refused before anything is created."""


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


class EngineAccess(Model):
    """How to run pgBackRest for an environment's cluster: its configuration file (which holds
    the repositories and the cipher passphrase) and the system user that owns the data."""

    stanza: str
    config_path: str
    system_user: str = "postgres"
    # 1 is the primary repository; 2, when the policy has a copy bucket, the copy.
    repositories: tuple[int, ...] = (1,)


class BackupTarget(Model):
    """Everything a backup or restore run needs to know about one environment's data."""

    environment: str
    database: DatabaseAccess
    store: ObjectStore
    # Physical backups: None where the data directory is not on a machine the flows reach.
    engine: EngineAccess | None = None
    # The Prometheus Pushgateway the flows push backup and drill metrics to, if there is one.
    metrics_url: str | None = None
    # What keys are named after: the policy's database name.
    database_label: str = Field(default="socialnet", pattern=r"^[A-Za-z0-9_.-]+$")

    @property
    def dump_prefix(self) -> str:
        return f"backups/{self.environment}/{self.database_label}/"

    def data_key(self, kind: BackupKind, backup_id: str) -> str:
        return f"{self.dump_prefix}{backup_id}.dump"

    def manifest_key(self, kind: BackupKind, backup_id: str) -> str:
        return f"{self.dump_prefix}{backup_id}.json"


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


# --- WAL archiving ---------------------------------------------------------------------------------


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
