"""Physical backups as data: pgBackRest's configuration, its catalog, and the decisions around it.

pgBackRest (https://pgbackrest.org) is the engine: WAL archiving (asynchronous archive-push and
archive-get), full/differential/incremental backups in parallel with zstd or lz4, an encrypted
S3 repository plus a copy in a second bucket, `verify`, delta restores to a time, a named restore
point or the latest. What it does not decide is here, pure: which type a scheduled backup takes,
which full backups retention expires (by count *and* by a recovery window, as Barman does),
which recorded marker a drill recovers to and whether the result matches, and whether a release
may start. No Prefect, no network, no subprocess.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from socialnet_ops.core.backups import BackupError

BackupType = Literal["full", "diff", "incr"]
CompressType = Literal["zst", "lz4"]
RecoveryTargetKind = Literal["time", "name", "latest"]
# The repository's folder in each bucket (followed by the stanza, the environment's name).
PGBACKREST_PATH = "/pgbackrest"
# pgBackRest's own retention is set out of reach: the flow expires by count and window itself.
ENGINE_RETENTION_OFF = 9999999


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Repository(Model):
    """One S3 repository of the engine (repo1 the primary, repo2 the copy in another bucket)."""

    index: int = Field(ge=1, le=4)
    bucket: str
    region: str
    host: str  # the S3 endpoint's host (TLS)
    port: int = 443
    verify_tls: bool = True  # off only towards a loopback TLS terminator (the emulator)
    uri_style: Literal["host", "path"] = "host"


class EngineSetup(Model):
    """Everything pgbackrest.conf says about one environment's cluster (its stanza)."""

    stanza: str
    data_dir: str
    port: int
    socket_dir: str
    repositories: tuple[Repository, ...]
    process_max: int = Field(default=2, ge=1, le=16)
    compress: CompressType = "zst"
    spool_path: str
    lock_path: str
    log_path: str


def render_config(setup: EngineSetup, cipher_pass: str, s3_key: str, s3_secret: str) -> str:
    """pgbackrest.conf for `setup`; it holds the cipher passphrase: written 0600 for its user."""
    lines = ["[global]"]
    for repo in setup.repositories:
        prefix = f"repo{repo.index}"
        lines += [
            f"{prefix}-type=s3",
            f"{prefix}-path={PGBACKREST_PATH}/{setup.stanza}",
            f"{prefix}-s3-bucket={repo.bucket}",
            f"{prefix}-s3-endpoint={repo.host}",
            f"{prefix}-storage-port={repo.port}",
            f"{prefix}-storage-verify-tls={'y' if repo.verify_tls else 'n'}",
            f"{prefix}-s3-uri-style={repo.uri_style}",
            f"{prefix}-s3-region={repo.region}",
            f"{prefix}-s3-key={s3_key}",
            f"{prefix}-s3-key-secret={s3_secret}",
            f"{prefix}-cipher-type=aes-256-cbc",
            f"{prefix}-cipher-pass={cipher_pass}",
            f"{prefix}-retention-full={ENGINE_RETENTION_OFF}",
        ]
    lines += [
        f"compress-type={setup.compress}",
        f"process-max={setup.process_max}",
        "start-fast=y",
        "archive-async=y",
        f"spool-path={setup.spool_path}",
        f"lock-path={setup.lock_path}",
        f"log-path={setup.log_path}",
        "log-level-console=info",
        "log-level-stderr=off",
        "log-level-file=detail",
        "",
        f"[{setup.stanza}]",
        f"pg1-path={setup.data_dir}",
        f"pg1-port={setup.port}",
        f"pg1-socket-path={setup.socket_dir}",
        "",
    ]
    return "\n".join(lines)


def archiving_settings(
    config_path: str, stanza: str, binary: str, timeout_s: int = 60
) -> list[str]:
    """`name=value` settings (for `postgres -c`) that archive WAL through pgBackRest (async:
    archive-push returns once the segment is in the spool; it pushes in parallel behind)."""
    return [
        "wal_level=replica",
        "archive_mode=on",
        f"archive_command={binary} --config={config_path} --stanza={stanza} archive-push %p",
        # A quiet database still closes a segment this often, bounding what a PITR can lose.
        f"archive_timeout={timeout_s}",
    ]


# --- the catalog (`pgbackrest info --output=json`) ------------------------------------------------


class PhysicalBackup(Model):
    label: str
    type: BackupType
    repository: int
    started_at: datetime
    stopped_at: datetime
    wal_start: str
    wal_stop: str
    size_bytes: int
    stored_bytes: int
    prior: str | None = None

    @property
    def duration_s(self) -> float:
        return (self.stopped_at - self.started_at).total_seconds()


class Catalog(Model):
    """One stanza's backups in every repository, oldest first, and its archive's WAL range."""

    stanza: str
    status: str
    backups: tuple[PhysicalBackup, ...] = ()
    archive_max_wal: str | None = None

    def in_repository(self, index: int) -> list[PhysicalBackup]:
        return [backup for backup in self.backups if backup.repository == index]

    def latest(self, repository: int = 1) -> PhysicalBackup | None:
        backups = self.in_repository(repository)
        return backups[-1] if backups else None


def _moment(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def parse_catalog(text: str, stanza: str) -> Catalog:
    """The stanza's entry of `pgbackrest info --output=json`."""
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as error:
        raise BackupError(f"pgbackrest info: not JSON ({error})") from None
    entry = next((item for item in entries if item.get("name") == stanza), None)
    if entry is None:
        return Catalog(stanza=stanza, status="missing stanza")
    backups = [
        PhysicalBackup(
            label=item["label"],
            type=item["type"],
            repository=int(item["database"]["repo-key"]),
            started_at=_moment(item["timestamp"]["start"]),
            stopped_at=_moment(item["timestamp"]["stop"]),
            wal_start=item["archive"]["start"],
            wal_stop=item["archive"]["stop"],
            size_bytes=int(item["info"]["size"]),
            stored_bytes=int(item["info"]["repository"].get("delta", 0)),
            prior=item.get("prior"),
        )
        for item in entry.get("backup", [])
    ]
    # The primary repository's newest WAL: what a recovery from it can reach.
    archives = [
        item["max"]
        for item in entry.get("archive", [])
        if item.get("max") and int(item.get("database", {}).get("repo-key", 1)) == 1
    ]
    return Catalog(
        stanza=stanza,
        status=str(entry.get("status", {}).get("message", "unknown")),
        backups=tuple(sorted(backups, key=lambda backup: (backup.started_at, backup.label))),
        archive_max_wal=max(archives) if archives else None,
    )


# --- which type a backup takes ---------------------------------------------------------------------


def choose_backup_type(
    now: datetime, backups: Sequence[PhysicalBackup], full_every: float, diff_every: float
) -> tuple[BackupType, str]:
    """Full when the newest full is older than `full_every` (or none), differential when the
    newest full or differential is older than `diff_every`, incremental otherwise; with why."""
    fulls = [backup for backup in backups if backup.type == "full"]
    if not fulls:
        return "full", "no full backup in the repository yet"
    full_age = (now - fulls[-1].started_at).total_seconds()
    if full_age >= full_every:
        return "full", f"the newest full backup is {full_age / 3600:.1f} h old"
    bases = [backup for backup in backups if backup.type in ("full", "diff")]
    base_age = (now - bases[-1].started_at).total_seconds()
    if base_age >= diff_every:
        return "diff", f"the newest full or differential backup is {base_age / 3600:.1f} h old"
    return "incr", f"a full or differential backup is {base_age / 3600:.1f} h old"


# --- retention: by count and by a recovery window ------------------------------------------------


class RetentionPlan(Model):
    keep: tuple[str, ...]
    expire: tuple[str, ...]  # full backups; their differentials and incrementals go with them
    reasons: Mapping[str, str]


def plan_retention(
    now: datetime, backups: Sequence[PhysicalBackup], keep_full: int, window_s: float | None
) -> RetentionPlan:
    """The full backups to expire: a full stays when it is one of the newest `keep_full`, or
    when a point inside the recovery window (`now - window_s` .. now) needs it: the newest full
    that finished before the window starts, and every full after it."""
    fulls = [backup for backup in backups if backup.type == "full"]
    reasons: dict[str, str] = {}
    for backup in fulls[-keep_full:] if keep_full else []:
        reasons[backup.label] = f"one of the newest {keep_full} full backups"
    if window_s is not None:
        window_start = now - timedelta(seconds=window_s)
        before = [backup for backup in fulls if backup.stopped_at <= window_start]
        anchor = before[-1] if before else None
        for backup in fulls:
            if backup.stopped_at > window_start or backup is anchor:
                reasons.setdefault(
                    backup.label,
                    f"needed to recover to any time since {window_start:%Y-%m-%d %H:%M} UTC",
                )
    keep = tuple(backup.label for backup in fulls if backup.label in reasons)
    expire = tuple(backup.label for backup in fulls if backup.label not in reasons)
    return RetentionPlan(keep=keep, expire=expire, reasons=reasons)


# --- recovery markers and drills -------------------------------------------------------------------


class RecoveryMarker(Model):
    """What the database held at `taken_at`: row counts and a checksum per table, read while
    writes were held off, then a commit after it (so recovery to `taken_at` can stop there)."""

    environment: str
    taken_at: datetime
    wal_segment: str  # the segment holding the commit after the marker: archived = usable
    row_counts: dict[str, int]
    table_checksums: dict[str, str]

    @property
    def checksum(self) -> str:
        return content_checksum(self.row_counts, self.table_checksums)

    def key(self) -> str:
        return f"markers/{self.environment}/{self.taken_at:%Y%m%dT%H%M%S.%fZ}.json"


def content_checksum(row_counts: Mapping[str, int], table_checksums: Mapping[str, str]) -> str:
    """One SHA-256 over every table's count and checksum, in name order."""
    digest = hashlib.sha256()
    for table in sorted(set(row_counts) | set(table_checksums)):
        digest.update(f"{table}:{row_counts.get(table)}:{table_checksums.get(table)}\n".encode())
    return digest.hexdigest()


def segment_number(name: str) -> tuple[int, int]:
    """A WAL file name's (timeline, position) for ordering."""
    return int(name[:8], 16), int(name[8:], 16)


def pick_marker(
    markers: Iterable[RecoveryMarker],
    oldest_backup_stop: datetime | None,
    last_archived_wal: str | None,
    seed: int | None = None,
) -> RecoveryMarker:
    """A random marker a recovery can reach (after the oldest backup ended, the commit after it
    archived): a drill proves a random moment of the window, not always the same one."""
    markers = list(markers)
    usable = sorted(
        (
            marker
            for marker in markers
            if oldest_backup_stop is not None
            and last_archived_wal is not None
            and marker.taken_at > oldest_backup_stop
            and segment_number(marker.wal_segment) <= segment_number(last_archived_wal)
        ),
        key=lambda marker: marker.taken_at,
    )
    if not usable:
        raise BackupError(
            f"no recovery marker inside the recoverable window ({len(markers)} recorded; oldest "
            f"backup ended {oldest_backup_stop.isoformat() if oldest_backup_stop else 'never'}; "
            f"WAL archived up to {last_archived_wal or 'nothing'}): run backup-marker after a "
            "base backup"
        )
    return random.Random(seed).choice(usable)


def marker_mismatches(
    expected: RecoveryMarker, row_counts: Mapping[str, int], table_checksums: Mapping[str, str]
) -> list[str]:
    """What the recovered database holds that the marker says it did not, table by table."""
    problems = []
    tables = set(expected.row_counts) | set(row_counts)
    tables |= set(expected.table_checksums) | set(table_checksums)
    for table in sorted(tables):
        want, got = expected.row_counts.get(table), row_counts.get(table)
        if want is None:
            problems.append(f"{table}: {got} rows, not in the marker")
        elif got is None:
            problems.append(f"{table}: missing after recovery, the marker recorded {want} rows")
        elif want != got:
            problems.append(f"{table}: {got} rows, the marker recorded {want}")
        elif expected.table_checksums.get(table) != table_checksums.get(table):
            problems.append(f"{table}: same row count, different content")
    return problems


class RestorePoint(Model):
    """A named point (pg_create_restore_point) a recovery can stop at, as the flows made it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:+-]{1,63}$")
    created_at: datetime
    lsn: str


def backup_before(backups: Sequence[PhysicalBackup], moment: datetime) -> PhysicalBackup | None:
    """The newest backup that ended before `moment`: where a recovery to it starts."""
    before = [backup for backup in backups if backup.stopped_at < moment]
    return before[-1] if before else None


class DrillRecord(Model):
    """The outcome of a point-in-time drill, kept in the bucket for the release guard."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    environment: str
    drill_id: str
    finished_at: datetime
    passed: bool
    target_time: datetime | None = None
    backup_label: str | None = None
    rto_s: float | None = None
    rpo_s: float | None = None
    rto_objective_s: float | None = None
    rpo_objective_s: float | None = None
    problem: str | None = None

    def key(self) -> str:
        return f"drills/{self.environment}/{self.drill_id}.json"


# --- the release guard -------------------------------------------------------------------------------


def release_guard_problems(
    now: datetime,
    *,
    archiving_problem: str | None,
    last_backup: PhysicalBackup | None,
    max_backup_age_s: float,
    last_drill: DrillRecord | None,
    max_drill_age_s: float,
) -> list[str]:
    """Why a release must not start: data it could not get back if the release went wrong."""
    problems = []
    if archiving_problem:
        problems.append(archiving_problem)
    if last_backup is None:
        problems.append("no physical backup exists: run base-backup first")
    else:
        age = (now - last_backup.stopped_at).total_seconds()
        if age > max_backup_age_s:
            problems.append(
                f"the last physical backup ({last_backup.label}) is {age / 3600:.1f} h old; the "
                f"policy allows {max_backup_age_s / 3600:.1f} h"
            )
    if last_drill is None:
        problems.append("no point-in-time drill has run: run pitr-drill first")
    elif not last_drill.passed:
        problems.append(
            f"the last point-in-time drill ({last_drill.drill_id}) failed: {last_drill.problem}"
        )
    else:
        age = (now - last_drill.finished_at).total_seconds()
        if age > max_drill_age_s:
            problems.append(
                f"the last point-in-time drill ({last_drill.drill_id}) is {age / 86400:.1f} days "
                f"old; the policy allows {max_drill_age_s / 86400:.1f}"
            )
    return problems


def drill_metrics(record: DrillRecord) -> dict[str, float]:
    """The drill's Prometheus samples (pushed to the Pushgateway)."""
    samples = {
        "socialnet_pitr_drill_success": 1.0 if record.passed else 0.0,
        "socialnet_pitr_drill_last_run_timestamp_seconds": record.finished_at.timestamp(),
    }
    optional = {
        "socialnet_pitr_drill_rto_seconds": record.rto_s,
        "socialnet_pitr_drill_rpo_seconds": record.rpo_s,
        "socialnet_pitr_drill_rto_objective_seconds": record.rto_objective_s,
        "socialnet_pitr_drill_rpo_objective_seconds": record.rpo_objective_s,
    }
    samples.update({name: value for name, value in optional.items() if value is not None})
    return samples


def describe_target(kind: RecoveryTargetKind, value: str | None) -> str:
    return "the end of the archived WAL" if kind == "latest" else f"{kind} {value}"
