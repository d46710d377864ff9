"""Alembic migrations: from an empty database to head and back to empty."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from app.api.core.db import ALEMBIC_INI, alembic_config, migration_head
from app.api.models import Base
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.integration

APP_TABLES = {"users", "follows", "posts", "likes", "comments"}
REPO_ROOT = Path(__file__).resolve().parents[3]


def public_tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as connection:
        return {
            row[0]
            for row in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }


def test_upgrade_from_empty_and_downgrade_back(postgres_server: PostgresServer) -> None:
    dsn = postgres_server.create_database("migrations_round_trip")
    config = alembic_config(postgres_server.sqlalchemy_url("migrations_round_trip"))
    config.attributes["configure_logging"] = False

    command.upgrade(config, "head")
    assert public_tables(dsn) == APP_TABLES | {"alembic_version"}
    with psycopg.connect(dsn) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchone() == (
            migration_head(),
        )

    command.downgrade(config, "base")
    assert public_tables(dsn) <= {"alembic_version"}
    with psycopg.connect(dsn) as connection:
        assert connection.execute("SELECT count(*) FROM alembic_version").fetchone() == (0,)

    command.upgrade(config, "head")
    assert public_tables(dsn) == APP_TABLES | {"alembic_version"}
    postgres_server.drop_database("migrations_round_trip")


def test_models_match_the_migrated_schema(postgres_server: PostgresServer) -> None:
    postgres_server.create_database("migrations_drift")
    url = postgres_server.sqlalchemy_url("migrations_drift")
    config = alembic_config(url)
    config.attributes["configure_logging"] = False
    command.upgrade(config, "head")
    engine = create_engine(url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []
    postgres_server.drop_database("migrations_drift")


def test_contract_command_migrates_with_environment_settings(
    postgres_server: PostgresServer,
) -> None:
    """`alembic -c app/api/alembic.ini upgrade head` reads SOCIALNET_DB_* like the app does."""
    dsn = postgres_server.create_database("migrations_cli")
    environment = {
        **os.environ,
        "SOCIALNET_DB_HOST": postgres_server.host,
        "SOCIALNET_DB_PORT": str(postgres_server.port),
        "SOCIALNET_DB_NAME": "migrations_cli",
        "SOCIALNET_DB_USER": postgres_server.superuser,
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "alembic",
            "-c",
            str(ALEMBIC_INI.relative_to(REPO_ROOT)),
            "upgrade",
            "head",
        ],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert public_tables(dsn) >= APP_TABLES
    postgres_server.drop_database("migrations_cli")
