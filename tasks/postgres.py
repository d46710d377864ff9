"""PostgreSQL tasks: schema migrations (Alembic, run from the release's own code), backups to S3
(pg_dump, pg_basebackup), verified restores and point-in-time recovery."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import pwd
import secrets
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from queue import Empty, Queue
from typing import IO, Any

import psycopg
from prefect import get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.transactions import Transaction
from psycopg import sql

from socialnet_ops.adapters.builds import load_build
from socialnet_ops.adapters.postgres import read_archiver_status
from socialnet_ops.adapters.process import ToolError, start_in_this_context, stream
from socialnet_ops.core.backups import (
    RECOVERY_CRITICAL_SETTINGS,
    ArchivedSegment,
    BackupError,
    BackupKind,
    BackupManifest,
    BackupTarget,
    DatabaseAccess,
    RecoveryPlan,
    Trigger,
    VerificationError,
    new_backup_id,
    object_metadata,
    pick_manifest,
    plan_recovery,
    verification_problems,
    wal_command,
    wal_to_delete,
)
from socialnet_ops.core.environments import Retention, load_environment
from socialnet_ops.core.holds import Holds
from socialnet_ops.core.migrations import contracting_statements
from socialnet_ops.core.results import RetentionOutcome
from socialnet_ops.core.retention import plan_retention
from socialnet_ops.platforms import backup_target_for, platform_for
from tasks.ledger import record_backup
from tasks.reporting import emit
from tasks.storage import (
    DOWNLOAD_CHUNK,
    StorageError,
    abort_stale_uploads,
    delete_objects,
    ensure_bucket_exists,
    get_json,
    list_objects,
    put_json,
    read_chunks,
    upload_stream,
)
from tasks.undo import recalled, remember, undo_step


class ContractingMigrationError(Exception):
    """A pending migration would break the release still serving."""


def _alembic(environment: str, version: str, *arguments: str) -> list[str]:
    logger = get_run_logger()
    build = load_build(environment, version)
    assert build.path is not None
    platform = platform_for(load_environment(environment))
    result = stream(
        [
            sys.executable,
            "-m",
            "alembic",
            "-c",
            str(build.path / "app/api/alembic.ini"),
            *arguments,
        ],
        logger.info,  # every line, also of the runs only parsed here: the run shows what ran
        cwd=build.path,
        # The build's runtime settings reach migrations too (a migration fault drill).
        env={"PYTHONPATH": str(build.path), **build.runtime_env, **platform.database_env()},
    )
    return result.lines


@task(name="check-migrations-expand-only")
def check_migrations(environment: str, version: str, allow_contracting: bool = False) -> list[str]:
    """The SQL the pending migrations would run, refused when it drops, renames or retypes."""
    current_lines = _alembic(environment, version, "current")
    revisions = [line.split()[0] for line in current_lines if line and not line.startswith("INFO")]
    start = revisions[0] if revisions else "base"
    sql = "\n".join(_alembic(environment, version, "upgrade", f"{start}:head", "--sql"))
    contracting = contracting_statements(sql)
    if contracting and not allow_contracting:
        listed = "; ".join(f"{why}: {statement[:120]}" for statement, why in contracting)
        raise ContractingMigrationError(
            f"release {version} has migrations that are not expand-only ({listed}); the release "
            "still serving would break. Split the change, or pass allow_contracting_migrations=True."
        )
    pending = [line for line in sql.splitlines() if line.startswith("-- Running upgrade")]
    get_run_logger().info("pending migrations from %s: %s", start, pending or "none")
    return pending


@task(name="migrate-database")
def migrate(environment: str, version: str) -> None:
    """Upgrade the schema to the release's head; Alembic makes a rerun a no-op.

    No Prefect retries: it runs inside the deploy's undo transaction, and a failed migration is
    undone by restoring the pre-deploy backup, not tried again over a half-migrated schema.
    """
    _alembic(environment, version, "upgrade", "head")


# --- backups and restores ---------------------------------------------------------------------
#
# The tool work (pg_dump, pg_basebackup, pg_restore, pg_ctl) lives here; what a backup *is*
# (ids, manifests, verification, WAL ranges) is in socialnet_ops.core.backups, S3 in tasks.storage.

BACKUP_LOCK_WAIT_SECONDS = 3600
LEDGER_WAIT_SECONDS = 120
_SERVER_USERS = ("postgres", "nobody")


class BackupToolError(BackupError):
    """pg_dump, pg_basebackup, pg_restore or the restored server failed; the message says how."""


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
            if (folder / name).is_file():
                return str(folder / name)
        raise BackupToolError(
            f"{name} not found on PATH; install the PostgreSQL client (postgresql-15)"
        )
    return found


def _now() -> datetime:
    return datetime.now(UTC)


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


class _ToolOutput:
    """A tool's stdout as a file; at its end the exit status is checked, so a failed tool is an
    error of the reader (and the upload reading it aborts) instead of a short, 'complete' object."""

    def __init__(self, process: subprocess.Popen[bytes], name: str, errors: _OutputLog) -> None:
        self.process = process
        self.name = name
        self.errors = errors

    def read(self, size: int = -1) -> bytes:
        assert self.process.stdout is not None
        data = self.process.stdout.read(size)
        if not data:
            returncode = self.process.wait()
            self.errors.join()
            if returncode != 0:
                raise BackupToolError(
                    f"{self.name} exited with {returncode}: {self.errors.tail() or 'no message'}"
                )
        return data


class _OutputLog:
    """Streams a tool's messages (stderr, or stdout and stderr merged) into the run log line by
    line and keeps the last lines. The pipe is read in a thread (the task's thread is busy moving
    the data); that thread carries the task's context, without which the lines would reach the
    terminal but not the run's logs."""

    def __init__(self, stream: IO[bytes] | None, prefix: str) -> None:
        self.lines: deque[str] = deque(maxlen=30)
        self.logger = get_run_logger()
        self.prefix = prefix
        self.thread = start_in_this_context(self._pump, stream, name=f"{prefix}-output")

    def _pump(self, stream: IO[bytes] | None) -> None:
        if stream is None:
            return
        for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self.lines.append(line)
                self.logger.info("%s: %s", self.prefix, line)

    def join(self) -> None:
        self.thread.join(timeout=10)

    def tail(self) -> str:
        return " | ".join(list(self.lines)[-5:])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


def _snapshot_facts(connection: psycopg.Connection[Any]) -> tuple[str | None, str]:
    revision = None
    if connection.execute("SELECT to_regclass('public.alembic_version')").fetchone()[0]:  # type: ignore[index]
        row = connection.execute("SELECT version_num FROM public.alembic_version").fetchone()
        revision = row[0] if row else None
    version = connection.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    return revision, str(version)


def count_rows(connection: psycopg.Connection[Any]) -> dict[str, int]:
    """Exact row counts of every user table, as `schema.table`."""
    tables = connection.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%' ORDER BY 1, 2"
    ).fetchall()
    counts = {}
    for schema, table in tables:
        row = connection.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
        ).fetchone()
        counts[f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


def _progress_logger(what: str) -> Callable[[int], None]:
    logger = get_run_logger()
    step = 256 * 1024 * 1024
    marks = {"next": step}

    def report(size: int) -> None:
        if size >= marks["next"]:
            logger.info("%s: %d MiB uploaded", what, size // 1048576)
            marks["next"] += step

    return report


def list_manifests(target: BackupTarget, kind: BackupKind) -> list[BackupManifest]:
    """Complete backups, oldest first (an object without a readable manifest is not a backup)."""
    prefix = target.dump_prefix if kind == "dump" else target.base_prefix
    manifests = []
    for stored in list_objects(target.store, prefix):
        if not stored.key.endswith(".json"):
            continue
        try:
            manifests.append(BackupManifest.model_validate(get_json(target.store, stored.key)))
        except (StorageError, ValueError) as error:
            get_run_logger().warning("ignoring %s: not a readable manifest (%s)", stored.key, error)
    return sorted(manifests, key=lambda manifest: (manifest.started_at, manifest.id))


def dump_to_store(target: BackupTarget, trigger: Trigger, release: str | None) -> BackupManifest:
    """pg_dump -Fc of one consistent snapshot, streamed into S3; the manifest is written last.

    The snapshot is exported by a REPEATABLE READ transaction that stays open during the dump:
    pg_dump reads it (--snapshot) while that same transaction counts the rows of every table, so
    the counts recorded are exactly those of the dumped data, and counting overlaps the upload.
    """
    logger = get_run_logger()
    access = target.database
    with backup_lock(target.environment):
        swept = abort_stale_uploads(target.store, target.dump_prefix)
        if swept:
            logger.warning("aborted unfinished uploads of earlier runs: %s", ", ".join(swept))
        started = _now()
        backup_id = new_backup_id(started)
        key = target.data_key("dump", backup_id)
        logger.info("backing up %s to s3://%s/%s", access.describe(), target.store.bucket, key)
        try:
            connection = psycopg.connect(**access.connect_kwargs())
        except psycopg.OperationalError as error:
            raise BackupError(f"cannot connect to {access.describe()}: {error}".strip()) from None
        with connection:
            connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            connection.read_only = True
            snapshot = connection.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
            schema_revision, server_version = _snapshot_facts(connection)
            command = [
                _tool("pg_dump"),
                "--format=custom",
                f"--snapshot={snapshot}",
                "--no-password",
            ]
            env = {**os.environ, **access.libpq_env(), "PGAPPNAME": "socialnet-backup-pg_dump"}
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
            )
            _widen_pipe(process.stdout)
            errors = _OutputLog(process.stderr, "pg_dump")
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="row-counts") as counter:
                counts = counter.submit(count_rows, connection)
                try:
                    uploaded = upload_stream(
                        target.store,
                        key,
                        _ToolOutput(process, "pg_dump", errors),  # type: ignore[arg-type]
                        object_metadata(
                            backup_id=backup_id,
                            environment=target.environment,
                            database=access.database,
                            release=release,
                            schema_revision=schema_revision,
                            started_at=started,
                        ),
                        on_progress=_progress_logger("pg_dump"),
                    )
                finally:
                    _stop(process)
                row_counts = counts.result()
        finished = _now()
        manifest = BackupManifest(
            id=backup_id,
            kind="dump",
            trigger=trigger,
            environment=target.environment,
            database=access.database,
            key=key,
            format="pg_dump custom",
            release=release,
            schema_revision=schema_revision,
            server_version=server_version,
            size_bytes=uploaded.size_bytes,
            sha256=uploaded.sha256,
            started_at=started,
            finished_at=finished,
            duration_s=round((finished - started).total_seconds(), 3),
            row_counts=row_counts,
        )
        put_json(
            target.store, target.manifest_key("dump", backup_id), manifest.model_dump(mode="json")
        )
    logger.info(
        "backup %s: %d bytes in %.1f s (%.1f MiB/s), sha256 %s",
        backup_id, manifest.size_bytes, manifest.duration_s, manifest.throughput_mib_s, manifest.sha256,
    )  # fmt: skip
    return manifest


@task(name="dump-database-to-s3")
def dump_database(target: BackupTarget, trigger: Trigger, release: str | None) -> BackupManifest:
    """No automatic retry: a retry is a full new dump; the next scheduled run is that retry."""
    return dump_to_store(target, trigger, release)


@task(name="resolve-backup-target")
def resolve_backup_target(environment: str) -> BackupTarget:
    return backup_target_for(load_environment(environment))


@task(name="take-predeploy-backup")
def take_predeploy_backup(environment: str, version: str) -> dict[str, str]:
    """The backup a deploy takes before migrating; its id goes into the deploy's report."""

    try:
        target = backup_target_for(load_environment(environment))
        ensure_bucket_exists(target.store)
        manifest = dump_to_store(target, "pre-deploy", version)
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
        restored = restore_dump_into(target, backup_id, target.database.database, replace=True)
        get_run_logger().warning(
            "restored pre-deploy backup %s over %s (the failed one is kept as %s)",
            backup_id,
            restored["database"],
            restored["previous_database_kept_as"],
        )

    undo_step(f"database of {environment}: pre-deploy backup {backup_id} restored", restore)


def backup_id(backup: dict[str, str] | None) -> str | None:
    return backup.get("id") if backup else None


def backup_name(backup: dict[str, str] | None) -> str:
    """How a release report names its pre-deploy backup."""
    if backup is None:
        return "none (the environment has no backup policy)"
    return f"{backup.get('id')} (s3 key {backup.get('key')}, sha256 {str(backup.get('sha256', ''))[:16]}…)"


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


# --- retention ------------------------------------------------------------------------------------


@task(name="apply-retention")
def apply_retention(
    target: BackupTarget, kind: BackupKind, rules: Retention, dry_run: bool = False
) -> RetentionOutcome:
    """GFS over the complete backups of `kind`; base backups also drop WAL no kept base needs."""
    logger = get_run_logger()
    with backup_lock(target.environment):
        manifests = list_manifests(target, kind)
        plan = plan_retention([manifest.point() for manifest in manifests], rules)
        doomed = [manifest for manifest in manifests if manifest.id in set(plan.delete_ids)]
        # Manifests first: an interrupted run leaves data objects that are no longer backups.
        keys = [target.manifest_key(kind, manifest.id) for manifest in doomed]
        keys += [manifest.key for manifest in doomed]
        wal: list[str] = []
        if kind == "base":
            kept = [manifest for manifest in manifests if manifest.id in plan.keep]
            archived = [
                stored.key.rsplit("/", 1)[-1]
                for stored in list_objects(target.store, target.wal_prefix)
            ]
            wal = wal_to_delete(kept, archived)
        verb = "would delete" if dry_run else "deleting"
        for line in plan.summary():
            logger.info("retention: %s", line)
        if doomed or wal:
            logger.info("retention %s %d backups and %d WAL files", verb, len(doomed), len(wal))
        if not dry_run:
            delete_objects(target.store, keys)
            delete_objects(target.store, [target.wal_prefix + name for name in wal])
    return RetentionOutcome(
        dry_run=dry_run, kept=plan.keep, deleted=plan.delete_ids, deleted_wal=wal
    )


# --- physical backups and WAL -------------------------------------------------------------------


def _current_wal_segment(access: DatabaseAccess) -> str:
    with psycopg.connect(**access.connect_kwargs(), autocommit=True) as connection:
        return str(connection.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0])  # type: ignore[index]


def _recovery_critical_settings(access: DatabaseAccess) -> dict[str, str]:
    with psycopg.connect(**access.connect_kwargs(), autocommit=True) as connection:
        rows = connection.execute(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
            (list(RECOVERY_CRITICAL_SETTINGS),),
        ).fetchall()
    return {str(name): str(value) for name, value in rows}


@task(name="wal-archiver-status")
def wal_archiver_status(target: BackupTarget) -> dict[str, Any]:
    """pg_stat_archiver, with `problem` set when archiving is failing now."""
    return read_archiver_status(target.database)


@task(name="base-backup-to-s3")
def take_base_backup(target: BackupTarget) -> BackupManifest:
    """pg_basebackup as one tar on stdout (WAL needed for consistency inside), streamed to S3."""
    logger = get_run_logger()
    access = target.database
    with backup_lock(target.environment):
        swept = abort_stale_uploads(target.store, target.base_prefix)
        if swept:
            logger.warning("aborted unfinished uploads of earlier runs: %s", ", ".join(swept))
        # Read before the backup's checkpoint: a conservative first segment the restore needs.
        start_wal = _current_wal_segment(access)
        started = _now()
        backup_id = new_backup_id(started)
        key = target.data_key("base", backup_id)
        command = [
            _tool("pg_basebackup"), "--pgdata=-", "--format=tar", "--wal-method=fetch",
            "--checkpoint=fast", "--no-password", f"--label=socialnet-{backup_id}",
        ]  # fmt: skip
        env = {**os.environ, **access.libpq_env()}
        logger.info("base backup of %s to s3://%s/%s", access.describe(), target.store.bucket, key)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        _widen_pipe(process.stdout)
        errors = _OutputLog(process.stderr, "pg_basebackup")
        try:
            uploaded = upload_stream(
                target.store,
                key,
                _ToolOutput(process, "pg_basebackup", errors),  # type: ignore[arg-type]
                object_metadata(
                    backup_id=backup_id,
                    environment=target.environment,
                    database="(cluster)",
                    release=None,
                    schema_revision=None,
                    started_at=started,
                ),
                on_progress=_progress_logger("pg_basebackup"),
            )
        finally:
            _stop(process)
        finished = _now()
        manifest = BackupManifest(
            id=backup_id,
            kind="base",
            environment=target.environment,
            database="(cluster)",
            key=key,
            format="pg_basebackup tar",
            size_bytes=uploaded.size_bytes,
            sha256=uploaded.sha256,
            started_at=started,
            finished_at=finished,
            duration_s=round((finished - started).total_seconds(), 3),
            start_wal=start_wal,
            stop_wal=_current_wal_segment(access),
            server_settings=_recovery_critical_settings(access),
        )
        put_json(
            target.store, target.manifest_key("base", backup_id), manifest.model_dump(mode="json")
        )
    logger.info("base backup %s: %d bytes, WAL from %s", backup_id, manifest.size_bytes, start_wal)
    return manifest


# --- restores ---------------------------------------------------------------------------------------


def _admin(access: DatabaseAccess) -> psycopg.Connection[Any]:
    """A connection for CREATE/ALTER/DROP DATABASE (the maintenance database `postgres`)."""
    try:
        return psycopg.connect(**access.connect_kwargs("postgres"), autocommit=True)
    except psycopg.OperationalError as error:
        raise BackupError(
            f"cannot connect to {access.describe('postgres')}: {error}".strip()
        ) from None


def database_exists(access: DatabaseAccess, name: str) -> bool:
    with _admin(access) as connection:
        return (
            connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            is not None
        )


def _drop(connection: psycopg.Connection[Any], name: str) -> None:
    connection.execute(
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )


def _rename(connection: psycopg.Connection[Any], old: str, new: str) -> None:
    # Sessions on the database block a rename; the app reconnects to the restored one.
    for attempt in range(5):
        # As the login role itself (granted pg_signal_backend), not the owner role it acts as.
        connection.execute("SET ROLE NONE")
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (old,),
        )
        connection.execute("RESET ROLE")
        try:
            connection.execute(
                sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(old), sql.Identifier(new)
                )
            )
            return
        except psycopg.errors.ObjectInUse:
            if attempt == 4:
                raise
            time.sleep(0.5)


PIPE_BYTES = 1024 * 1024
PREFETCH_CHUNKS = 16


def _widen_pipe(stream: IO[bytes] | None) -> None:
    """A 1 MiB pipe instead of 64 KiB: fewer stalls between a tool and the network (Linux)."""
    if stream is not None and hasattr(fcntl, "F_SETPIPE_SZ"):
        with contextlib.suppress(OSError):
            fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _prefetch(chunks: Iterator[bytes], depth: int = PREFETCH_CHUNKS) -> Iterator[bytes]:
    """Download ahead in a thread, so the network and the tool reading the bytes overlap."""
    queue: Queue[bytes | BaseException | None] = Queue(maxsize=depth)
    stop = threading.Event()

    def pump() -> None:
        try:
            for chunk in chunks:
                if stop.is_set():
                    return
                queue.put(chunk)
            queue.put(None)
        except BaseException as error:
            queue.put(error)

    thread = threading.Thread(target=pump, name="s3-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(Empty):
                queue.get(timeout=0.1)


def _feed(process: subprocess.Popen[bytes], chunks: Iterator[bytes]) -> tuple[int, str, str | None]:
    """Copy the object into the tool's stdin, hashing it; returns size, sha256 and a read error."""
    assert process.stdin is not None
    digest = hashlib.sha256()
    size = 0
    failure = None
    try:
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
            try:
                process.stdin.write(chunk)
            except BrokenPipeError:
                # The tool stopped reading (it failed); keep hashing so the report says why.
                continue
    except StorageError as error:
        failure = str(error)
    finally:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
    return size, digest.hexdigest(), failure


def restore_dump_into(
    target: BackupTarget, backup_id: str, database: str, replace: bool
) -> dict[str, Any]:
    """Restore a dump into a scratch database, verify it, and only then put it in place.

    `replace` swaps an existing `database` out (kept as `<database>_before_restore_<time>`); when
    anything fails the scratch database is dropped and `database` is never touched.
    """
    logger = get_run_logger()
    access = target.database
    manifest = pick_manifest(list_manifests(target, "dump"), backup_id)
    scratch = f"{database[:40]}_restoring_{secrets.token_hex(3)}"
    logger.info("restoring backup %s (%d bytes) into %s", manifest.id, manifest.size_bytes, scratch)
    started = time.monotonic()
    with _admin(access) as connection:
        create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch))
        if access.owner_role:
            create += sql.SQL(" OWNER {}").format(sql.Identifier(access.owner_role))
        connection.execute(create)
    try:
        command = [
            _tool("pg_restore"), "--no-owner", "--exit-on-error", "--no-password", f"--dbname={scratch}",
        ]  # fmt: skip
        if access.owner_role:
            command.append(f"--role={access.owner_role}")
        env = {**os.environ, **access.libpq_env(scratch)}
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        errors = _OutputLog(process.stdout, "pg_restore")
        try:
            _widen_pipe(process.stdin)
            size, sha256, read_error = _feed(
                process, _prefetch(read_chunks(target.store, manifest.key))
            )
            returncode = process.wait()
        finally:
            _stop(process)
        errors.join()
        problems = []
        if read_error:
            problems.append(f"download: {read_error}")
        if size != manifest.size_bytes or sha256 != manifest.sha256:
            # Structural checks first: rows of a corrupt object mean nothing.
            problems += verification_problems(
                manifest, size_bytes=size, sha256=sha256,
                schema_revision=manifest.schema_revision, row_counts=manifest.row_counts,
            )  # fmt: skip
        if returncode != 0:
            problems.append(f"pg_restore exited with {returncode}: {errors.tail() or 'no message'}")
        if not problems:
            with psycopg.connect(**access.connect_kwargs(scratch)) as restored:
                revision, _ = _snapshot_facts(restored)
                counts = count_rows(restored)
            problems = verification_problems(
                manifest,
                size_bytes=size,
                sha256=sha256,
                schema_revision=revision,
                row_counts=counts,
            )
        if problems:
            raise VerificationError(
                f"restore of backup {manifest.id} failed verification; {database} was not touched:\n- "
                + "\n- ".join(problems)
            )
        previous = None
        with _admin(access) as connection:
            if replace:
                previous = f"{database[:30]}_before_restore_{_now():%Y%m%d%H%M%S}"
                _rename(connection, database, previous)
            try:
                _rename(connection, scratch, database)
            except psycopg.Error:
                if previous is not None:
                    _rename(connection, previous, database)  # put the original back
                raise
    except BaseException:
        with _admin(access) as connection:
            _drop(connection, scratch)
        raise
    seconds = round(time.monotonic() - started, 3)
    logger.info("restored %s into %s in %.1f s; verified", manifest.id, database, seconds)
    return {
        "backup_id": manifest.id,
        "database": database,
        "replaced": replace,
        "previous_database_kept_as": previous,
        "size_bytes": size,
        "sha256": sha256,
        "schema_revision": manifest.schema_revision,
        "tables": len(counts),
        "rows": sum(counts.values()),
        "seconds": seconds,
    }


@task(name="restore-dump")
def restore_dump(
    target: BackupTarget, backup_id: str, database: str, replace: bool
) -> dict[str, Any]:
    return restore_dump_into(target, backup_id, database, replace)


@task(name="drop-database", retries=2, retry_delay_seconds=2)
def drop_database(target: BackupTarget, database: str) -> None:
    if database == target.database.database:
        raise BackupError(f"refusing to drop {database}: it is the environment's live database")
    with _admin(target.database) as connection:
        _drop(connection, database)


# --- point-in-time recovery -------------------------------------------------------------------------


def _server_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root; when we are root it runs as this user."""
    if os.geteuid() != 0:
        return None
    for name in _SERVER_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise BackupToolError("running as root and no `postgres` user to run the restored server as")


def _as_server_user(command: list[str]) -> list[str]:
    user = _server_user()
    if user is None:
        return command
    return [
        "setpriv",
        f"--reuid={user.pw_uid}",
        f"--regid={user.pw_gid}",
        "--init-groups",
        "--",
        *command,
    ]


class _HashingStream(io.RawIOBase):
    """The object's chunks as a readable file that hashes what passes (for tarfile's stream mode)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.pending = memoryview(b"")
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.pending:
            chunk = next(self.chunks, b"")
            if not chunk:
                return 0
            self.digest.update(chunk)
            self.size += len(chunk)
            self.pending = memoryview(chunk)
        count = min(len(buffer), len(self.pending))
        buffer[:count] = self.pending[:count]
        self.pending = self.pending[count:]
        return count

    def drain(self) -> None:
        """Read (and hash) what the tar stream did not need: the checksum covers every byte."""
        self.pending = memoryview(b"")
        for chunk in self.chunks:
            self.digest.update(chunk)
            self.size += len(chunk)


def _log_tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _chown_tree(root: Path, user: pwd.struct_passwd) -> None:
    os.chown(root, user.pw_uid, user.pw_gid)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(folder, name), user.pw_uid, user.pw_gid, follow_symlinks=False)


def _server_log_lines(path: Path) -> list[str]:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace").splitlines()
    return []


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet: what mkdir(parents=True) makes."""
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def stop_command(data_dir: Path) -> str:
    """The shell command that stops a restored server, as a person on this machine runs it."""
    command = [_tool("pg_ctl"), "-D", str(data_dir), "stop"]
    user = _server_user()
    if user is not None:
        # The server runs as its own user and pg_ctl refuses to run as root.
        command = ["runuser", "-u", user.pw_name, "--", *command]
    return shlex.join(command)


def restore_to_time(
    target: BackupTarget, when: datetime, restore_dir: Path | None, port: int
) -> dict[str, Any]:
    """Base backup before `when` into a new data directory, WAL replayed up to `when`, promoted.

    The request is checked against the base backups and the archived WAL before anything is
    created; without `restore_dir` the data goes into a new `socialnet-pitr-<env>-*` folder of
    the temporary directory. A failed restore leaves nothing behind: a server it started is
    stopped, what it created removed. The server keeps running on 127.0.0.1:`port` (archiving
    off, so it never writes into the environment's archive); the result's `stop_with` stops it.
    """
    logger = get_run_logger()
    bases = list_manifests(target, "base")
    archived = [
        ArchivedSegment(stored.key.rsplit("/", 1)[-1], stored.last_modified)
        for stored in list_objects(target.store, target.wal_prefix)
    ]
    plan = plan_recovery(when, bases, archived)
    if restore_dir is not None:
        given = restore_dir / "data"
        if given.exists() and any(given.iterdir()):
            raise BackupError(f"{given} is not empty; give a new directory for the restored server")
    logger.info(
        "recovering to %s from base backup %s and %d WAL segments (%s..%s)",
        when.isoformat(), plan.base.id, len(plan.segments), plan.segments[0], plan.segments[-1],
    )  # fmt: skip
    created: Path | None  # the outermost folder this run made, removed again if it fails
    if restore_dir is None:
        restore_dir = Path(tempfile.mkdtemp(prefix=f"socialnet-pitr-{target.environment}-"))
        created = restore_dir
    else:
        created = _first_missing(restore_dir)
        restore_dir.mkdir(parents=True, exist_ok=True)
    data_dir = restore_dir / "data"
    try:
        if created is not None:
            restore_dir.chmod(0o755)  # ours: the server's user must traverse it
        data_dir.mkdir(exist_ok=True)
        data_dir.chmod(0o700)
        return _recover(target, plan, data_dir, port)
    except BaseException:
        if (data_dir / "postmaster.pid").exists():
            stop_restored_server(data_dir, lambda line: logger.info("pg_ctl: %s", line))
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        else:  # a data directory given empty stays, empty
            for child in data_dir.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise


def _recover(target: BackupTarget, plan: RecoveryPlan, data_dir: Path, port: int) -> dict[str, Any]:
    logger = get_run_logger()
    reader = _HashingStream(_prefetch(read_chunks(target.store, plan.base.key)))
    try:
        with tarfile.open(fileobj=io.BufferedReader(reader, DOWNLOAD_CHUNK), mode="r|") as archive:
            archive.extractall(data_dir, filter="tar")
        reader.drain()
    except tarfile.TarError as error:
        raise VerificationError(
            f"base backup {plan.base.id} is damaged: not a readable tar ({error})"
        ) from None
    problems = verification_problems(
        plan.base, size_bytes=reader.size, sha256=reader.digest.hexdigest(),
        schema_revision=None, row_counts={},
    )  # fmt: skip
    if problems:
        raise VerificationError(f"base backup {plan.base.id} is damaged: " + "; ".join(problems))
    (data_dir / "recovery.signal").touch()
    settings = {
        **plan.base.server_settings,
        "restore_command": wal_command("fetch", target.store, target.wal_prefix.rstrip("/")),
        "recovery_target_time": plan.target.astimezone(UTC).isoformat(),
        "recovery_target_action": "promote",
        "archive_mode": "off",
        "listen_addresses": "127.0.0.1",
    }
    with (data_dir / "postgresql.auto.conf").open("a") as conf:
        conf.write("\n# point-in-time recovery by socialnet-ops\n")
        for name, value in settings.items():
            conf.write(f"{name} = '{value.replace(chr(39), chr(39) * 2)}'\n")
    user = _server_user()
    log = data_dir / "restore.log"  # in the data directory: the only place that is the server's
    log.touch()
    if user is not None:
        _chown_tree(data_dir, user)
    options = f"-p {port} -k {shlex.quote(str(data_dir))}"
    command = _as_server_user(
        [
            _tool("pg_ctl"),
            "start",
            "-D",
            str(data_dir),
            "-l",
            str(log),
            "-w",
            "-t",
            "600",
            "-o",
            options,
        ]
    )
    access = target.database.model_copy(update={"host": "127.0.0.1", "port": port})
    try:
        try:
            stream(command, lambda line: logger.info("pg_ctl: %s", line))
        except ToolError as error:
            raise BackupToolError(
                f"the restored server did not start (pg_ctl exited with {error.returncode}: "
                f"{' | '.join(error.tail[-3:])}); the end of its log:\n{_log_tail(log)}"
            ) from None
        deadline = time.monotonic() + 600
        while True:
            try:
                with psycopg.connect(**access.connect_kwargs(), autocommit=True) as connection:
                    if not connection.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
                        counts = count_rows(connection)
                        break
            except psycopg.OperationalError as error:
                if not (data_dir / "postmaster.pid").exists():
                    raise BackupToolError(
                        f"the restored server stopped: {error}; the end of its log:\n"
                        + _log_tail(log)
                    ) from None
            if time.monotonic() > deadline:
                raise BackupToolError(
                    f"recovery did not finish within 600 s; the end of its log:\n{_log_tail(log)}"
                )
            time.sleep(0.3)
    finally:
        # The server writes to its log file, not to us: its recovery is copied into the run's
        # logs, also when the data directory (and the file) is then removed.
        server_log = _server_log_lines(log)
        for line in server_log:
            logger.info("restored server: %s", line)
    stop_line = next((line for line in server_log if "recovery stopping" in line), "")
    logger.info("restored server promoted on port %d: %s", port, stop_line or "end of WAL")
    return {
        "base_backup": plan.base.id,
        "target_time": plan.target.isoformat(),
        "wal_segments": len(plan.segments),
        "recovery_stop": stop_line.split("LOG:", 1)[-1].strip(),
        "host": "127.0.0.1",
        "port": port,
        "data_dir": str(data_dir),
        "log": str(log),
        "stop_with": stop_command(data_dir),
        "database": access.database,
        "row_counts": counts,
    }


@task(name="restore-to-point-in-time")
def restore_point_in_time(
    target: BackupTarget, when: datetime, restore_dir: str | None, port: int
) -> dict[str, Any]:
    return restore_to_time(target, when, Path(restore_dir) if restore_dir else None, port)


def stop_restored_server(data_dir: Path, on_line: Callable[[str], None] | None = None) -> None:
    """Fast shutdown of a restored server; nothing when none runs there."""
    command = _as_server_user([_tool("pg_ctl"), "stop", "-D", str(data_dir), "-m", "fast", "-w"])
    with contextlib.suppress(ToolError):
        stream(command, on_line or (lambda _line: None))
