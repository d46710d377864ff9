"""Backup and restore throughput: the flows against the raw tools, side by side, in one run.

A database of at least 1 GB is generated in a throw-away PostgreSQL; then
- raw `pg_dump -Fc` to a local file, versus the backup flow (pg_dump streamed to S3 with its
  SHA-256, row counts of the same snapshot, manifest, retention);
- raw `pg_restore` of that file into a new database, versus the restore flow (the object streamed
  from S3 into pg_restore, checksum, schema revision and row counts verified, renamed into place).
Both sides use the same pg_dump/pg_restore flags (custom format, default compression, one job).
Each of the four is run `--rounds` times in turn (default 2) and the fastest run is kept.

S3 is the AWS emulator running as its own process (`moto_server`), as on the local platform.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

import boto3
import psycopg

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script: make `tests.support` importable

from socialnet_ops.core.backups import BackupTarget, DatabaseAccess, ObjectStore  # noqa: E402
from tests.support.postgres import PostgresServer, free_port  # noqa: E402

BUCKET = "socialnet-backups-bench"
REGION: Final = "eu-west-3"
DATABASE = "bench"


def log(message: str) -> None:
    print(f"[backup_throughput] {message}", file=sys.stderr, flush=True)


def generate(server: PostgresServer, target_bytes: int) -> int:
    """Posts-like rows (ids, times, ~220 characters of text, an index) until the size is reached."""
    server.create_database(DATABASE)
    with psycopg.connect(server.dsn_for(DATABASE), autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE posts (id bigint PRIMARY KEY, author int NOT NULL, "
            "created_at timestamptz NOT NULL, body text NOT NULL)"
        )
        connection.execute("CREATE TABLE users (id int PRIMARY KEY, handle text NOT NULL)")
        connection.execute(
            "INSERT INTO users SELECT g, 'user' || g FROM generate_series(1, 100000) g"
        )
        batch, start = 1_000_000, 0
        while True:
            size = connection.execute("SELECT pg_database_size(current_database())").fetchone()
            assert size is not None
            if size[0] >= target_bytes:
                # Settle hint bits and the visibility map now, as in a database that has aged:
                # otherwise whichever side reads the fresh rows first pays for writing them.
                log("vacuuming")
                connection.execute("VACUUM (FREEZE, ANALYZE)")
                connection.execute("CHECKPOINT")
                return int(size[0])
            connection.execute(
                "INSERT INTO posts SELECT g, 1 + g %% 100000, "
                "timestamptz '2025-01-01' + g * interval '1 second', "
                "'post ' || g || ': ' || md5(g::text) || ' ' || md5((g * 7)::text) || ' ' || "
                "md5((g * 13)::text) || ' ' || repeat(md5((g %% 977)::text), 3) "
                "FROM generate_series(%s, %s) g",
                (start + 1, start + batch),
            )
            start += batch
            log(f"generated {start} posts")


def settle() -> None:
    """Write dirty pages out first, so no step is throttled by the writeback of an earlier one."""
    os.sync()


def timed(command: list[str]) -> float:
    settle()
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def start_emulator() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    binary = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    process = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=url, region_name=REGION)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.create_bucket(
                Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
            )
            return process, url
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each; fastest kept")
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    workdir = Path(tempfile.mkdtemp(prefix="socialnet-bench-backup-"))
    emulator, url = start_emulator()
    server = PostgresServer().start()
    try:
        log("generating the database")
        db_bytes = generate(server, int(args.size_gb * 1024**3))
        log(f"database: {db_bytes / 1024**2:.0f} MiB")
        environment = {**os.environ, "PGHOST": server.host, "PGPORT": str(server.port)}
        environment["PGUSER"] = server.superuser
        os.environ.update(environment)

        from prefect.testing.utilities import prefect_test_harness

        from flows.backup import backup
        from flows.common import ensure_release_limits
        from flows.restore import restore

        target = BackupTarget(
            environment="local",
            database=DatabaseAccess(
                host=server.host, port=server.port, user=server.superuser, database=DATABASE
            ),
            store=ObjectStore(bucket=BUCKET, region=REGION, endpoint_url=url),
            database_label="bench",
        )
        dump_file = workdir / "raw.dump"
        with prefect_test_harness(server_startup_timeout=120):
            ensure_release_limits(["local"])
            # One untimed pass first: the first reader of the fresh table would pay for the cache.
            log("warm-up read")
            settle()
            subprocess.run(
                ["pg_dump", "--format=custom", "--compress=0", f"--dbname={DATABASE}"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            raw_dumps: list[float] = []
            backups: list[float] = []
            raw_restores: list[float] = []
            restores: list[float] = []
            # Rounds in turn, the fastest of each kept: single runs on a shared 2-core machine
            # vary by 10%, which is the size of the difference measured.
            for round_ in range(1, args.rounds + 1):
                log(f"round {round_}: raw pg_dump -Fc to a file")
                settle()
                raw_dumps.append(
                    timed(
                        [
                            "pg_dump",
                            "--format=custom",
                            f"--file={dump_file}",
                            f"--dbname={DATABASE}",
                        ]
                    )
                )
                log(
                    f"raw dump {raw_dumps[-1]:.1f} s ({dump_file.stat().st_size / 1024**2:.0f} MiB)"
                )
                settle()
                started = time.perf_counter()
                backed_up = backup(env="local", release="bench", target=target)
                backups.append(time.perf_counter() - started)
                log(f"backup flow {backups[-1]:.1f} s ({backed_up.size_bytes / 1024**2:.0f} MiB)")

                server.drop_database("raw_restore")
                settle()
                started = time.perf_counter()
                subprocess.run(["createdb", "raw_restore"], check=True)
                subprocess.run(
                    [
                        "pg_restore",
                        "--no-owner",
                        "--exit-on-error",
                        "--dbname=raw_restore",
                        str(dump_file),
                    ],
                    check=True,
                )
                raw_restores.append(time.perf_counter() - started)
                log(f"raw restore {raw_restores[-1]:.1f} s")
                server.drop_database("raw_restore")
                settle()
                started = time.perf_counter()
                restored = restore(env="local", backup_id=backed_up.backup_id, target=target)
                restores.append(time.perf_counter() - started)
                log(f"restore flow {restores[-1]:.1f} s into {restored.database}")
                server.drop_database(restored.database)
    finally:
        server.destroy()
        emulator.terminate()
        emulator.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        json.dumps(
            {
                "benchmark": "backup_throughput",
                "db_bytes": db_bytes,
                "dump_bytes": backed_up.size_bytes,
                "raw_dump_s": round(min(raw_dumps), 2),
                "backup_s": round(min(backups), 2),
                "backup_ratio": round(min(backups) / min(raw_dumps), 3),
                "raw_restore_s": round(min(raw_restores), 2),
                "restore_s": round(min(restores), 2),
                "restore_ratio": round(min(restores) / min(raw_restores), 3),
                "runs_s": {
                    "raw_dump": [round(value, 1) for value in raw_dumps],
                    "backup": [round(value, 1) for value in backups],
                    "raw_restore": [round(value, 1) for value in raw_restores],
                    "restore": [round(value, 1) for value in restores],
                },
            }
        )
    )


if __name__ == "__main__":
    main()
