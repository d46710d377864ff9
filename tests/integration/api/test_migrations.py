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
from sqlalchemy.exc import DBAPIError

from app.api.core.db import ALEMBIC_INI, alembic_config, migration_head
from app.api.models import Base
from tests.integration.api.conftest import database_env
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
    environment = {**os.environ, **database_env(postgres_server, "migrations_cli")}
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


def test_usernames_differing_only_by_case_stop_the_migration_by_name(
    postgres_server: PostgresServer,
) -> None:
    dsn = postgres_server.create_database("migrations_case_clash")
    config = alembic_config(postgres_server.sqlalchemy_url("migrations_case_clash"))
    config.attributes["configure_logging"] = False
    command.upgrade(config, "0001")
    names = ["Alice", "alice", "ALICE", "bob", "Bob", "carol"]
    with psycopg.connect(dsn) as connection:
        for name in names:
            connection.execute(
                "INSERT INTO users (username, password_hash, display_name) VALUES (%s, 'x', %s)",
                (name, name),
            )

    with pytest.raises(DBAPIError) as refused:
        command.upgrade(config, "head")
    message = str(refused.value.orig)
    assert message.splitlines()[0] == (
        "usernames that differ only by case, 2 group(s) (at most 20 shown): "
        "ALICE, Alice, alice; Bob, bob; rename all but one in each group, then migrate again"
    )
    with psycopg.connect(dsn) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchone() == ("0001",)
        assert sorted(row[0] for row in connection.execute("SELECT username FROM users")) == sorted(
            names
        )
        # Once people have settled who keeps each name, the migration goes through.
        connection.execute(
            "UPDATE users SET username = username || '_' || id WHERE username <> lower(username)"
        )

    command.upgrade(config, "head")
    with psycopg.connect(dsn) as connection:
        assert connection.execute("SELECT count(*) FROM users").fetchone() == (len(names),)
    postgres_server.drop_database("migrations_case_clash")
