"""Physical backups on pgBackRest: the flows against the raw engine and the dump, in one run.

The same database as `backup_throughput` (posts-like rows until pg_database_size reaches
`--size-gb` GiB, about 1.2 GB on disk), in a throw-away PostgreSQL archiving its WAL through
pgBackRest into the AWS emulator (its own `moto_server` process) behind HAProxy terminating TLS
(pgBackRest speaks S3 only over TLS), as the local platform runs it: one encrypted repository,
zstd, the policy's process-max. One run of each, side by side:
- full backup: the base-backup flow (`backup_type="full"`; stanza check, backup, `verify`,
  retention, end to end) vs raw `pgbackrest --type=full backup` as the data's owner; and vs
  today's dump path (the backup flow: pg_dump streamed to S3);
- incremental: after changing 1 % of the rows (every 100th post: spread over every file of the
  table, as random writes are), the base-backup flow with `backup_type="incr"`;
- restore: the restore flow's recovery of the latest into a new empty folder (full restore);
  then, the restored server stopped, 1 % more changed, an incremental taken, the same into the
  same folder (a delta restore: only the files that differ are fetched);
- the same two steps once more with the newest 1 % of the posts changed (contiguous: few files);
- point-in-time recovery: 1 % changed after the last backup, a moment between two writes taken,
  the restore flow's recovery to it into a new empty folder (restore + WAL replay + promotion).

Time spent letting the WAL of a change reach the archive is not counted: a backup taken hours
after the writes finds them archived. Everything on 127.0.0.1. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Final, TypeVar
from uuid import UUID

import boto3
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: `benchmarks`

from benchmarks.backup_throughput import DATABASE, generate, settle
from socialnet_ops.adapters.pg_recovery import stop_restored_server
from socialnet_ops.adapters.pgbackrest import as_user, install_config, pgbackrest_binary
from socialnet_ops.core.backups import BackupTarget, DatabaseAccess, EngineAccess, ObjectStore
from socialnet_ops.core.environments import load_environment
from socialnet_ops.core.physical_backups import (
    EngineSetup,
    Repository,
    archiving_settings,
    render_config,
)
from socialnet_ops.core.results import PointInTimeRestoreResult
from socialnet_ops.platforms.local.tools import ensure_tls_pem
from tests.support.postgres import PostgresServer, free_port

ENV: Final = "local"  # the environment whose policy the flows apply (deployments/environments)
STANZA: Final = "local"
REGION: Final = "eu-west-3"
STEP_TIMEOUT_S: Final = 1800
T = TypeVar("T")


def log(message: str) -> None:
    print(f"[backup_engine] {message}", file=sys.stderr, flush=True)


def start_emulator(buckets: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    binary = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    process = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name=REGION)
    deadline = time.monotonic() + 30
    for bucket in buckets:
        while True:
            try:
                client.create_bucket(
                    Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
                )
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    return process, port


def start_tls_front(folder: Path, emulator_port: int) -> tuple[subprocess.Popen[bytes], int]:
    """HAProxy terminating TLS in front of the emulator, as the local platform's edge does."""
    pem = folder / "s3.pem"
    ensure_tls_pem(pem)
    port = free_port()
    config = folder / "haproxy.cfg"
    config.write_text(
        "defaults\n  mode http\n  timeout connect 5s\n  timeout client 300s\n"
        "  timeout server 300s\n"
        f"frontend s3_tls\n  bind 127.0.0.1:{port} ssl crt {pem}\n  default_backend emulator\n"
        f"backend emulator\n  server moto 127.0.0.1:{emulator_port}\n"
    )
    process = subprocess.Popen(
        ["haproxy", "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process, port
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("HAProxy's TLS front of the emulator did not start")
        time.sleep(0.1)


def execute(server: PostgresServer, statement: str) -> int:
    """One statement on the benchmark's database; the rows it touched."""
    with psycopg.connect(server.dsn_for(DATABASE), autocommit=True) as connection:
        return connection.execute(statement).rowcount


def one(server: PostgresServer, query: str, database: str = DATABASE) -> Any:
    with psycopg.connect(server.dsn_for(database), autocommit=True) as connection:
        row = connection.execute(query).fetchone()
    assert row is not None
    return row[0]


def wait_archived(server: PostgresServer, timeout_s: float = 600) -> float:
    """Close the current WAL segment and wait until pgBackRest archived it (and all before)."""
    started = time.perf_counter()
    segment = one(server, "SELECT pg_walfile_name(pg_switch_wal())", "postgres")
    deadline = time.monotonic() + timeout_s
    while (one(server, "SELECT last_archived_wal FROM pg_stat_archiver", "postgres") or "") < (
        segment
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"WAL segment {segment} not archived within {timeout_s:.0f} s")
        time.sleep(0.5)
    return time.perf_counter() - started


def timed(label: str, action: Callable[[], T]) -> tuple[T, float]:
    settle()
    started = time.perf_counter()
    value = action()
    elapsed = time.perf_counter() - started
    log(f"{label}: {elapsed:.1f} s")
    return value, elapsed


def change_one_percent(server: PostgresServer, where: str, what: str) -> int:
    """UPDATE 1 % of the posts, then let its WAL reach the archive (not counted)."""
    changed = execute(server, f"UPDATE posts SET body = body || ' (edited)' WHERE {where}")
    archived_s = wait_archived(server)
    log(f"changed {changed} posts ({what}); WAL archived {archived_s:.1f} s later")
    return changed


_SIZE = re.compile(r"\((\d+(?:\.\d+)?)(B|KB|MB|GB|TB), [\d.]+%\)")
_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def restore_file_bytes(text: str) -> dict[str, int]:
    """From pgBackRest's restore log (log-level-file=detail): bytes of the files it fetched from
    the repository and of those a delta found already matching (sizes as pgBackRest rounds them)."""
    fetched = matched = 0
    for line in text.splitlines():
        if "restore file " not in line:
            continue
        size = _SIZE.search(line)
        if size is None:
            continue
        amount = int(float(size.group(1)) * _UNITS[size.group(2)])
        if " - exists and matches" in line or " - exists and is zero size" in line:
            matched += amount
        else:
            fetched += amount
    return {"fetched_bytes": fetched, "matched_bytes": matched}


def task_seconds(flow_run_ids: dict[str, str | None]) -> dict[str, dict[str, float]]:
    """Per flow run, the seconds its tasks ran, summed by task name (read at the end: the
    server records task states from events, a moment after they happen)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    seconds: dict[str, dict[str, float]] = {}
    with get_client(sync_client=True) as client:
        for label, flow_run_id in flow_run_ids.items():
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(str(flow_run_id))]))
            )
            by_name: dict[str, float] = {}
            for run in runs:
                name = run.name.rsplit("-", 1)[0]
                by_name[name] = by_name.get(name, 0.0) + run.total_run_time.total_seconds()
            seconds[label] = {name: round(value, 2) for name, value in sorted(by_name.items())}
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0, help="as backup_throughput")
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    policy = load_environment(ENV).backup
    assert policy is not None and policy.physical is not None
    physical = policy.physical
    buckets = [policy.bucket] + ([physical.copy_bucket] if physical.copy_bucket else [])
    user = "postgres"
    binary = pgbackrest_binary()
    bench_started = time.perf_counter()

    # Under /tmp and 0755: PostgreSQL's user reaches the config, and the restored clusters.
    workdir = Path(tempfile.mkdtemp(prefix="socialnet-bench-engine-"))
    workdir.chmod(0o755)
    config = workdir / "pgbackrest" / "pgbackrest.conf"
    restored_dirs: list[Path] = []
    emulator, emulator_port = start_emulator(buckets)
    haproxy: subprocess.Popen[bytes] | None = None
    server = PostgresServer()
    figures: dict[str, Any] = {}
    try:
        haproxy, tls_port = start_tls_front(workdir, emulator_port)
        server.start()
        user = server.run_as_user or user
        log("generating the database (archiving off: its WAL is not part of any measure)")
        db_bytes = generate(server, int(args.size_gb * 1024**3))
        log(f"database: {db_bytes / 1024**2:.0f} MiB")
        setup = EngineSetup(
            stanza=STANZA,
            data_dir=str(server.data_dir),
            port=server.port,
            socket_dir=str(server.socket_dir),
            repositories=(
                Repository(
                    index=1,
                    bucket=policy.bucket,
                    region=REGION,
                    host="127.0.0.1",
                    port=tls_port,
                    verify_tls=False,
                    uri_style="path",
                ),
            ),
            process_max=physical.process_max,
            compress=physical.compress,
            spool_path=str(workdir / "pgbackrest" / "spool"),
            lock_path=str(workdir / "pgbackrest" / "lock"),
            log_path=str(workdir / "pgbackrest" / "log"),
        )
        text = render_config(setup, secrets.token_urlsafe(32), "testing", "testing")
        install_config(setup, config, text, user)
        # Restarted archiving through pgBackRest (same data, same port), as the platform runs it.
        server.stop()
        server.extra_settings = (
            *archiving_settings(str(config), STANZA, binary, timeout_s=0),
            "full_page_writes=on",
        )
        server.start()

        def pgbackrest(*arguments: str) -> None:
            subprocess.run(
                as_user(user, [binary, f"--config={config}", f"--stanza={STANZA}", *arguments]),
                check=True,
                cwd="/",
                stdout=subprocess.DEVNULL,
                timeout=STEP_TIMEOUT_S,
            )

        pgbackrest("stanza-create")
        pgbackrest("check")
        os.environ.update(
            {"PGHOST": server.host, "PGPORT": str(server.port), "PGUSER": server.superuser}
        )

        from prefect.testing.utilities import prefect_test_harness

        from flows.backup import backup, base_backup
        from flows.common import ensure_release_limits
        from flows.restore import restore

        target = BackupTarget(
            environment=ENV,
            database=DatabaseAccess(
                host=server.host, port=server.port, user=server.superuser, database=DATABASE
            ),
            store=ObjectStore(
                bucket=policy.bucket,
                region=REGION,
                endpoint_url=f"http://127.0.0.1:{emulator_port}",
            ),
            database_label=DATABASE,
            # One repository: the flow does what the raw command does, no copy into a second.
            engine=EngineAccess(
                stanza=STANZA, config_path=str(config), system_user=user, repositories=(1,)
            ),
        )
        posts = int(one(server, "SELECT count(*) FROM posts"))
        newest = int(one(server, "SELECT max(id) FROM posts"))
        runs: dict[str, str | None] = {}

        restore_log = Path(setup.log_path) / f"{STANZA}-restore.log"
        restore_log_read = [0]  # what earlier restores wrote to pgBackRest's restore log

        def restored(label: str, result: Any, expected_posts: int) -> dict[str, Any]:
            restored_dirs.append(Path(result.data_dir))
            assert result.row_counts["public.posts"] == expected_posts, result.row_counts
            with restore_log.open("rb") as file:
                file.seek(restore_log_read[0])
                files = restore_file_bytes(file.read().decode(errors="replace"))
                restore_log_read[0] = file.tell()
            log(
                f"{label}: pgbackrest restore {result.restore_s:.1f} s, promoted and read "
                f"{result.recovery_s:.1f} s (delta: {result.delta}, from {result.backup_label}; "
                f"fetched {files['fetched_bytes'] / 1024**2:.0f} MiB, "
                f"matched {files['matched_bytes'] / 1024**2:.0f} MiB)"
            )
            stop_restored_server(Path(result.data_dir))
            return {"restore_s": result.restore_s, "recovery_s": result.recovery_s, **files}

        with prefect_test_harness(server_startup_timeout=120):
            ensure_release_limits([ENV])
            # -- full: the flow, then the raw command --------------------------------------
            full, full_s = timed(
                "base-backup flow, full",
                lambda: base_backup(env=ENV, backup_type="full", target=target),
            )
            runs["full"] = full.flow_run_id
            _, raw_full_s = timed(
                "raw pgbackrest --type=full backup",
                lambda: pgbackrest("--repo=1", "--type=full", "backup"),
            )
            dumped, dump_s = timed(
                "backup flow (pg_dump)",
                lambda: backup(env=ENV, release="bench", target=target),
            )
            # -- incremental after 1 % spread ----------------------------------------------
            change_one_percent(server, "id % 100 = 0", "every 100th")
            incr, incr_s = timed(
                "base-backup flow, incremental (1 % spread)",
                lambda: base_backup(env=ENV, backup_type="incr", target=target),
            )
            runs["incr"] = incr.flow_run_id
            # -- full restore, then a delta after 1 % more ---------------------------------
            restore_dir = workdir / "restore"

            def restore_latest(label: str, what: str) -> dict[str, Any]:
                recovered = timed(
                    what,
                    lambda: restore(
                        env=ENV, latest=True, restore_dir=str(restore_dir), target=target
                    ),
                )[0]
                return restored(label, recovered, posts)

            full_restore = restore_latest(
                "full restore", "restore flow, latest into an empty folder"
            )
            change_one_percent(server, "id % 100 = 50", "every 100th, others")
            incr2, incr2_s = timed(
                "base-backup flow, incremental (1 % spread, again)",
                lambda: base_backup(env=ENV, backup_type="incr", target=target),
            )
            runs["incr2"] = incr2.flow_run_id
            delta_restore = restore_latest(
                "delta restore", "restore flow, latest over the earlier restore"
            )
            # -- the same with the newest 1 % (contiguous: the table's last files) ---------
            change_one_percent(server, f"id > {newest - newest // 100}", "the newest")
            incr_recent, incr_recent_s = timed(
                "base-backup flow, incremental (newest 1 %)",
                lambda: base_backup(env=ENV, backup_type="incr", target=target),
            )
            runs["incr_recent"] = incr_recent.flow_run_id
            delta_recent = restore_latest(
                "delta restore (newest 1 %)", "restore flow, latest over the earlier restore"
            )
            # -- point in time: 1 % changed since the last backup, then two writes ---------
            execute(server, "CREATE TABLE pitr_marks (id int PRIMARY KEY, at timestamptz)")
            execute(server, "UPDATE posts SET body = body || ' (edited)' WHERE id % 100 = 25")
            execute(server, "INSERT INTO pitr_marks VALUES (1, clock_timestamp())")
            time.sleep(0.5)
            between: datetime = one(server, "SELECT clock_timestamp()", "postgres")
            time.sleep(0.5)
            execute(server, "INSERT INTO pitr_marks VALUES (2, clock_timestamp())")
            wait_archived(server)
            pitr, _ = timed(
                "restore flow, point in time into an empty folder",
                lambda: restore(
                    env=ENV,
                    point_in_time=between,
                    restore_dir=str(workdir / "pitr"),
                    target=target,
                ),
            )
            assert isinstance(pitr, PointInTimeRestoreResult)
            pitr_figures = restored("point-in-time recovery", pitr, posts)
            assert pitr.row_counts["public.pitr_marks"] == 1, pitr.row_counts
            assert "recovery stopping before commit" in (pitr.recovery_stop or ""), pitr
            tasks = task_seconds(runs)

        def backup_part(label: str) -> float:
            return tasks[label].get("physical-backup", 0.0)

        def verify_part(label: str) -> float:
            return tasks[label].get("verify-repository", 0.0)

        figures = {
            "benchmark": "backup_engine",
            "database_bytes": db_bytes,
            "posts": posts,
            "process_max": physical.process_max,
            "compress": physical.compress,
            "full_s": round(full_s, 2),
            "raw_full_s": round(raw_full_s, 2),
            "full_ratio_vs_raw": round(full_s / raw_full_s, 3),
            "full_backup_task_s": backup_part("full"),
            "full_verify_s": verify_part("full"),
            "full_backup_task_ratio_vs_raw": round(backup_part("full") / raw_full_s, 3),
            "full_stored_bytes": full.stored_bytes,
            "dump_s": round(dump_s, 2),
            "dump_bytes": dumped.size_bytes,
            "full_ratio_vs_dump": round(full_s / dump_s, 3),
            "incremental_s": round(incr_s, 2),
            "incremental_ratio": round(incr_s / full_s, 3),
            "incremental_backup_task_s": backup_part("incr"),
            "incremental_verify_s": verify_part("incr"),
            "incremental_backup_task_ratio": round(backup_part("incr") / backup_part("full"), 3)
            if backup_part("full")
            else None,
            "incremental_stored_bytes": incr.stored_bytes,
            "incremental_2_s": round(incr2_s, 2),
            "incremental_2_stored_bytes": incr2.stored_bytes,
            "full_restore_s": full_restore["restore_s"],
            "full_recovery_s": full_restore["recovery_s"],
            "delta_restore_s": delta_restore["restore_s"],
            "delta_recovery_s": delta_restore["recovery_s"],
            "full_restore_fetched_bytes": full_restore["fetched_bytes"],
            "delta_restore_fetched_bytes": delta_restore["fetched_bytes"],
            "delta_restore_matched_bytes": delta_restore["matched_bytes"],
            "delta_restore_ratio": round(delta_restore["restore_s"] / full_restore["restore_s"], 3),
            "delta_recovery_ratio": round(
                delta_restore["recovery_s"] / full_restore["recovery_s"], 3
            ),
            "recent_incremental_s": round(incr_recent_s, 2),
            "recent_incremental_ratio": round(incr_recent_s / full_s, 3),
            "recent_incremental_backup_task_s": backup_part("incr_recent"),
            "recent_incremental_verify_s": verify_part("incr_recent"),
            "recent_incremental_stored_bytes": incr_recent.stored_bytes,
            "recent_delta_restore_s": delta_recent["restore_s"],
            "recent_delta_restore_fetched_bytes": delta_recent["fetched_bytes"],
            "recent_delta_restore_ratio": round(
                delta_recent["restore_s"] / full_restore["restore_s"], 3
            ),
            "pitr_s": pitr_figures["recovery_s"],
            "pitr_restore_s": pitr_figures["restore_s"],
            "pitr_backup": pitr.backup_label,
            "tasks_s": tasks,
            "bench_s": round(time.perf_counter() - bench_started, 1),
        }
    finally:
        for data_dir in restored_dirs:
            with contextlib.suppress(Exception):
                stop_restored_server(data_dir)
        server.destroy()
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait(timeout=10)
        emulator.terminate()
        emulator.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
