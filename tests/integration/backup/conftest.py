"""Backups against real tools: PostgreSQL (fixture-started), S3 from the AWS emulator's server,
and a real Prefect server. The flows are pointed at them through a `BackupTarget`."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import boto3
import psycopg
import pytest
from moto.server import ThreadedMotoServer
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)

from socialnet_ops.adapters.pgbackrest import install_config, pgbackrest_binary
from socialnet_ops.adapters.s3 import ensure_bucket_exists
from socialnet_ops.core.backups import BackupTarget, DatabaseAccess, EngineAccess, ObjectStore
from socialnet_ops.core.physical_backups import (
    EngineSetup,
    Repository,
    archiving_settings,
    render_config,
)
from socialnet_ops.platforms.local.tools import ensure_tls_pem, s3_tls_config
from tests.support.postgres import PostgresServer, free_port
from tests.support.requirements import unavailable
from tests.support.waiting import wait_for

BUCKET = "socialnet-backups-local"
COPY_BUCKET = "socialnet-backups-local-copy"
REGION = "eu-west-3"


@dataclass
class Emulator:
    """The AWS emulator's server; stop() and start() keep its port and (in-process) its data."""

    port: int = 0
    server: ThreadedMotoServer | None = field(default=None, repr=False)

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.port = self.server.get_host_and_port()[1]

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.url, region_name=REGION)

    @property
    def store(self) -> ObjectStore:
        return ObjectStore(bucket=BUCKET, region=REGION, endpoint_url=self.url, create_bucket=True)


@pytest.fixture(scope="package")
def emulator() -> Iterator[Emulator]:
    saved = {name: os.environ.get(name) for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    moto = Emulator()
    moto.start()
    # moto keeps its state per process: a second package setup in one worker finds the bucket.
    ensure_bucket_exists(moto.store)
    yield moto
    moto.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def target_for(
    server: PostgresServer,
    database: str,
    emulator: Emulator,
    engine: EngineAccess | None = None,
    metrics_url: str | None = None,
) -> BackupTarget:
    """The flows' seam: which database and which bucket, instead of the environment's platform."""
    return BackupTarget(
        environment="local",
        database=DatabaseAccess(
            host=server.host, port=server.port, user=server.superuser, database=database
        ),
        store=emulator.store,
        database_label=database,
        engine=engine,
        metrics_url=metrics_url,
    )


def execute(server: PostgresServer, database: str, *statements: str) -> None:
    with psycopg.connect(server.dsn_for(database), autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


def fetch(server: PostgresServer, database: str, query: str, port: int | None = None) -> list[Any]:
    dsn = server.dsn_for(database)
    if port is not None:
        dsn = f"postgresql://{server.superuser}@127.0.0.1:{port}/{database}"
    with psycopg.connect(dsn) as connection:
        return connection.execute(query).fetchall()


def data_digest(server: PostgresServer, database: str) -> str:
    """SHA-256 of `pg_dump --data-only`: equal digests mean identical data."""
    pg_dump = server.binary("pg_dump")
    # Newer pg_dump writes a random \\restrict key into plain dumps unless given a fixed one.
    help_text = subprocess.run([pg_dump, "--help"], capture_output=True, text=True).stdout
    fixed_key = ["--restrict-key=digest"] if "--restrict-key" in help_text else []
    result = subprocess.run(
        [pg_dump, "--data-only", "--no-comments", *fixed_key, server.dsn_for(database)],
        capture_output=True,
        check=True,
    )
    return hashlib.sha256(result.stdout).hexdigest()


def task_run_lines(flow_run_id: UUID, task_name: str) -> list[str]:
    """The messages the flow run's task `task_name` (its one run) logged, read from the server."""
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        ids = {run.id for run in task_runs if run.name.startswith(f"{task_name}-")}
        assert len(ids) == 1, [run.name for run in task_runs]
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    return [log.message for log in logs if log.task_run_id in ids]


def create_app_database(server: PostgresServer, name: str, users: int = 50) -> None:
    """A small social-network-like schema with an Alembic revision and a sequence."""
    server.create_database(name)
    execute(
        server,
        name,
        "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)",
        "INSERT INTO alembic_version VALUES ('0002_posts')",
        "CREATE TABLE users (id serial PRIMARY KEY, handle text UNIQUE NOT NULL, bio text)",
        "CREATE TABLE posts (id bigserial PRIMARY KEY, author int REFERENCES users(id), "
        "body text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())",
        "CREATE INDEX posts_author ON posts(author, created_at DESC)",
        f"INSERT INTO users (handle, bio) SELECT 'user' || g, repeat('é', g % 7) "
        f"FROM generate_series(1, {users}) g",
        "INSERT INTO posts (author, body) SELECT 1 + g % "
        f"{users}, 'post ' || g || ' ' || md5(g::text) FROM generate_series(1, {users * 20}) g",
    )


def create_large_database(server: PostgresServer, name: str, rows: int = 300_000) -> None:
    """~40 MB of poorly compressible rows: a dump long enough to be interrupted mid-upload."""
    server.create_database(name)
    execute(
        server,
        name,
        "CREATE TABLE blobs AS SELECT g AS id, md5(random()::text) || md5(random()::text) || "
        "md5(random()::text) || md5(random()::text) || md5(random()::text) || "
        f"md5(random()::text) AS payload FROM generate_series(1, {rows}) g",
    )


@pytest.fixture(scope="package")
def s3_tls_port(emulator: Emulator) -> Iterator[int]:
    """HAProxy terminating TLS in front of the emulator, with the local platform's own
    configuration of it (pgBackRest speaks S3 only over TLS)."""
    folder = Path(tempfile.mkdtemp(prefix="socialnet-s3tls-"))
    pem = folder / "s3.pem"
    ensure_tls_pem(pem)
    port = free_port()
    config = folder / "haproxy.cfg"
    config.write_text(s3_tls_config("local", port, pem, emulator.port))
    haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(config)])
    wait_for(lambda: _answers(port), timeout_s=10, what="HAProxy's TLS front of the emulator")
    yield port
    haproxy.terminate()
    haproxy.wait(timeout=10)
    shutil.rmtree(folder, ignore_errors=True)


def _answers(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class ArchivingServer:
    server: PostgresServer
    engine: EngineAccess


@pytest.fixture(scope="package")
def archiving(emulator: Emulator, s3_tls_port: int) -> Iterator[ArchivingServer]:
    """A PostgreSQL archiving its WAL through pgBackRest into the emulator's bucket (encrypted,
    copied into a second bucket), as an environment's would."""
    pgbackrest_binary()
    folder = Path(tempfile.mkdtemp(prefix="socialnet-pgbackrest-"))
    folder.chmod(0o755)  # PostgreSQL's user reaches its config through it
    config = folder / "pgbackrest.conf"
    ensure_bucket_exists(emulator.store.model_copy(update={"bucket": COPY_BUCKET}))
    server = PostgresServer(
        settings=[
            *archiving_settings(str(config), "local", pgbackrest_binary(), timeout_s=0),
            "full_page_writes=on",
        ]
    )
    try:
        server.start()
    except Exception as error:  # a missing PostgreSQL is handled by the session fixture's rule
        unavailable(str(error))
    setup = EngineSetup(
        stanza="local",
        data_dir=str(server.data_dir),
        port=server.port,
        socket_dir=str(server.socket_dir),
        repositories=tuple(
            Repository(
                index=index,
                bucket=bucket,
                region=REGION,
                host="127.0.0.1",
                port=s3_tls_port,
                verify_tls=False,
                uri_style="path",
            )
            for index, bucket in ((1, BUCKET), (2, COPY_BUCKET))
        ),
        spool_path=str(folder / "spool"),
        lock_path=str(folder / "lock"),
        log_path=str(folder / "log"),
    )
    user = server.run_as_user or "postgres"
    install_config(setup, config, render_config(setup, secrets.token_urlsafe(32), "k", "s"), user)
    yield ArchivingServer(
        server,
        EngineAccess(
            stanza="local", config_path=str(config), system_user=user, repositories=(1, 2)
        ),
    )
    server.destroy()
    shutil.rmtree(folder, ignore_errors=True)
