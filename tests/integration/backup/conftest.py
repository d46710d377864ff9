"""Backups against real tools: PostgreSQL (fixture-started), S3 from the AWS emulator's server,
and a real Prefect server. The flows are pointed at them through a `BackupTarget`."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
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

from socialnet_ops.adapters.s3 import ensure_bucket_exists
from socialnet_ops.core.backups import BackupTarget, DatabaseAccess, ObjectStore, archiving_settings
from tests.support.postgres import PostgresServer
from tests.support.requirements import unavailable

BUCKET = "socialnet-backups-local"
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


def target_for(server: PostgresServer, database: str, emulator: Emulator) -> BackupTarget:
    """The flows' seam: which database and which bucket, instead of the environment's platform."""
    return BackupTarget(
        environment="local",
        database=DatabaseAccess(
            host=server.host, port=server.port, user=server.superuser, database=database
        ),
        store=emulator.store,
        database_label=database,
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
def archiving_server(emulator: Emulator) -> Iterator[PostgresServer]:
    """A PostgreSQL that archives its WAL into the emulator's bucket, as an environment would."""
    server = PostgresServer(settings=archiving_settings(emulator.store, "local", timeout_s=0))
    try:
        server.start()
    except Exception as error:  # a missing PostgreSQL is handled by the session fixture's rule
        unavailable(str(error))
    yield server
    server.destroy()
