"""Logical backups of PostgreSQL in S3: pg_dump streamed into the bucket, a dump restored
into a scratch database and verified before it is put in place, retention of what is stored.

What a backup *is* (ids, manifests, verification, WAL ranges) is in socialnet_ops.core.backups.
The caller holds the environment's backup lock (a Prefect concurrency limit) around each of these.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import psycopg

from socialnet_ops.adapters.pg_streams import (
    OutputLog,
    ToolOutput,
    feed,
    prefetch,
    progress_logger,
    stop_process,
    widen_pipe,
)
from socialnet_ops.adapters.postgres import (
    RunLog,
    connect_admin,
    count_rows,
    create_database,
    drop_database,
    rename_database,
    snapshot_facts,
    tool_path,
)
from socialnet_ops.adapters.s3 import (
    StorageError,
    Uploaded,
    abort_stale_uploads,
    delete_objects,
    get_json,
    list_objects,
    put_json,
    read_chunks,
    upload_stream,
)
from socialnet_ops.core.backups import (
    BackupError,
    BackupKind,
    BackupManifest,
    BackupTarget,
    Trigger,
    VerificationError,
    new_backup_id,
    object_metadata,
    pick_manifest,
    verification_problems,
)
from socialnet_ops.core.environments import Retention
from socialnet_ops.core.results import RetentionOutcome
from socialnet_ops.core.retention import plan_retention


def _now() -> datetime:
    return datetime.now(UTC)


def list_manifests(target: BackupTarget, kind: BackupKind, *, log: RunLog) -> list[BackupManifest]:
    """Complete backups, oldest first (an object without a readable manifest is not a backup)."""
    manifests = []
    for stored in list_objects(target.store, target.dump_prefix):
        if not stored.key.endswith(".json"):
            continue
        try:
            manifests.append(BackupManifest.model_validate(get_json(target.store, stored.key)))
        except (StorageError, ValueError) as error:
            log.warning("ignoring %s: not a readable manifest (%s)", stored.key, error)
    return sorted(manifests, key=lambda manifest: (manifest.started_at, manifest.id))


def _start_tool(command: list[str], name: str, env: dict[str, str], log: RunLog) -> ToolOutput:
    """The tool running with its stdout piped to be read and its stderr streamed into `log`."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    widen_pipe(process.stdout)
    return ToolOutput(process, name, OutputLog(process.stderr, name, log))


def _upload_tool_output(
    output: ToolOutput,
    target: BackupTarget,
    key: str,
    metadata: dict[str, str],
    log: RunLog,
) -> Uploaded:
    """The tool's stdout streamed into `key`; the tool is stopped however the upload ends."""
    try:
        return upload_stream(
            target.store,
            key,
            output,  # type: ignore[arg-type]
            metadata,
            on_progress=progress_logger(output.name, log),
        )
    finally:
        stop_process(output.process)


def _upload_facts(uploaded: Uploaded, started: datetime) -> dict[str, Any]:
    """What a manifest records of the upload that just ended: size, checksum and times."""
    finished = _now()
    return {
        "size_bytes": uploaded.size_bytes,
        "sha256": uploaded.sha256,
        "started_at": started,
        "finished_at": finished,
        "duration_s": round((finished - started).total_seconds(), 3),
    }


def _store_manifest(target: BackupTarget, manifest: BackupManifest) -> None:
    """Written last: only a complete backup has a manifest."""
    put_json(
        target.store,
        target.manifest_key(manifest.kind, manifest.id),
        manifest.model_dump(mode="json"),
    )


def _sweep_stale_uploads(target: BackupTarget, prefix: str, log: RunLog) -> None:
    swept = abort_stale_uploads(target.store, prefix)
    if swept:
        log.warning("aborted unfinished uploads of earlier runs: %s", ", ".join(swept))


def dump_to_store(
    target: BackupTarget,
    trigger: Trigger,
    release: str | None,
    *,
    log: RunLog,
) -> BackupManifest:
    """pg_dump -Fc of one consistent snapshot, streamed into S3; the manifest is written last.

    The snapshot is exported by a REPEATABLE READ transaction that stays open during the dump:
    pg_dump reads it (--snapshot) while that same transaction counts the rows of every table, so
    the counts recorded are exactly those of the dumped data, and counting overlaps the upload.
    """
    access = target.database
    _sweep_stale_uploads(target, target.dump_prefix, log)
    started = _now()
    backup_id = new_backup_id(started)
    key = target.data_key("dump", backup_id)
    log.info("backing up %s to s3://%s/%s", access.describe(), target.store.bucket, key)
    try:
        connection = psycopg.connect(**access.connect_kwargs())
    except psycopg.OperationalError as error:
        raise BackupError(f"cannot connect to {access.describe()}: {error}".strip()) from None
    with connection:
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        connection.read_only = True
        snapshot = connection.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
        schema_revision, server_version = snapshot_facts(connection)
        command = [
            tool_path("pg_dump"),
            "--format=custom",
            f"--snapshot={snapshot}",
            "--no-password",
        ]
        env = {**os.environ, **access.libpq_env(), "PGAPPNAME": "socialnet-backup-pg_dump"}
        output = _start_tool(command, "pg_dump", env, log)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="row-counts") as counter:
            counts = counter.submit(count_rows, connection)
            metadata = object_metadata(
                backup_id=backup_id, environment=target.environment, database=access.database,
                release=release, schema_revision=schema_revision, started_at=started,
            )  # fmt: skip
            uploaded = _upload_tool_output(output, target, key, metadata, log)
            row_counts = counts.result()
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
        **_upload_facts(uploaded, started),
        row_counts=row_counts,
    )
    _store_manifest(target, manifest)
    log.info(
        "backup %s: %d bytes in %.1f s (%.1f MiB/s), sha256 %s",
        backup_id, manifest.size_bytes, manifest.duration_s, manifest.throughput_mib_s, manifest.sha256,
    )  # fmt: skip
    return manifest


def prune_backups(
    target: BackupTarget,
    kind: BackupKind,
    rules: Retention,
    dry_run: bool,
    *,
    log: RunLog,
) -> RetentionOutcome:
    """GFS over the complete backups of `kind`."""
    manifests = list_manifests(target, kind, log=log)
    plan = plan_retention([manifest.point() for manifest in manifests], rules)
    doomed = [manifest for manifest in manifests if manifest.id in set(plan.delete_ids)]
    # Manifests first: an interrupted run leaves data objects that are no longer backups.
    keys = [target.manifest_key(kind, manifest.id) for manifest in doomed]
    keys += [manifest.key for manifest in doomed]
    verb = "would delete" if dry_run else "deleting"
    for line in plan.summary():
        log.info("retention: %s", line)
    if doomed:
        log.info("retention %s %d backups", verb, len(doomed))
    if not dry_run:
        delete_objects(target.store, keys)
    return RetentionOutcome(dry_run=dry_run, kept=plan.keep, deleted=plan.delete_ids)


# --- restores -----------------------------------------------------------------------------------


def restore_dump_into(
    target: BackupTarget,
    backup_id: str,
    database: str,
    replace: bool,
    *,
    log: RunLog,
) -> dict[str, Any]:
    """Restore a dump into a scratch database, verify it, and only then put it in place.

    `replace` swaps an existing `database` out (kept as `<database>_before_restore_<time>`); when
    anything fails the scratch database is dropped and `database` is never touched.
    """
    access = target.database
    manifest = pick_manifest(list_manifests(target, "dump", log=log), backup_id)
    scratch = f"{database[:40]}_restoring_{secrets.token_hex(3)}"
    log.info("restoring backup %s (%d bytes) into %s", manifest.id, manifest.size_bytes, scratch)
    started = time.monotonic()
    with connect_admin(access) as connection:
        create_database(connection, scratch, access.owner_role)
    try:
        command = [
            tool_path("pg_restore"), "--no-owner", "--exit-on-error", "--no-password", f"--dbname={scratch}",
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
        errors = OutputLog(process.stdout, "pg_restore", log)
        try:
            widen_pipe(process.stdin)
            size, sha256, read_error = feed(
                process, prefetch(read_chunks(target.store, manifest.key))
            )
            returncode = process.wait()
        finally:
            stop_process(process)
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
                revision, _ = snapshot_facts(restored)
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
        with connect_admin(access) as connection:
            if replace:
                previous = f"{database[:30]}_before_restore_{_now():%Y%m%d%H%M%S}"
                rename_database(connection, database, previous)
            try:
                rename_database(connection, scratch, database)
            except psycopg.Error:
                if previous is not None:
                    rename_database(connection, previous, database)  # put the original back
                raise
    except BaseException:
        with connect_admin(access) as connection:
            drop_database(connection, scratch)
        raise
    seconds = round(time.monotonic() - started, 3)
    log.info("restored %s into %s in %.1f s; verified", manifest.id, database, seconds)
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


def drop_restored_database(target: BackupTarget, database: str) -> None:
    """Drop a database a restore made (a drill's scratch copy); never the environment's own."""
    if database == target.database.database:
        raise BackupError(f"refusing to drop {database}: it is the environment's live database")
    with connect_admin(target.database) as connection:
        drop_database(connection, database)
