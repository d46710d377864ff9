"""PostgreSQL as the backups see it: connections that read and change a server's databases, and
where its client tools are. The tool work on top is in `pg_backups` and `pg_recovery`."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from socialnet_ops.core.backups import (
    BackupError,
    DatabaseAccess,
    archiver_problem,
)

# What the adapters log through: the task's run logger (the same lines reach the run's logs).
RunLog = logging.Logger | logging.LoggerAdapter[logging.Logger]


class BackupToolError(BackupError):
    """pg_dump, pg_basebackup, pg_restore or the restored server failed; the message says how."""


def tool_path(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
            if (folder / name).is_file():
                return str(folder / name)
        raise BackupToolError(
            f"{name} not found on PATH; install the PostgreSQL client (postgresql-15)"
        )
    return found


def read_archiver_status(access: DatabaseAccess) -> dict[str, Any]:
    """`pg_stat_archiver` of a server, with `problem` set when WAL is not being archived.

    For `socialnet-ops status` and the base-backup flow.
    """
    try:
        with psycopg.connect(**access.connect_kwargs(), autocommit=True) as connection:
            cursor = connection.execute(
                "SELECT current_setting('archive_mode') AS archive_mode, archived_count, "
                "last_archived_wal, last_archived_time, failed_count, last_failed_wal, "
                "last_failed_time FROM pg_stat_archiver"
            )
            names = [column.name for column in cursor.description or []]
            row = cursor.fetchone()
    except psycopg.OperationalError as error:
        raise BackupError(f"cannot connect to {access.describe()}: {error}".strip()) from None
    stats: dict[str, Any] = dict(zip(names, row or (), strict=False))
    stats["problem"] = archiver_problem(stats)
    if stats.get("archive_mode") == "off":
        stats["problem"] = (
            "archive_mode is off: WAL is not archived, point-in-time recovery is impossible"
        )
    return stats


def create_restore_point(access: DatabaseAccess, name: str) -> str:
    """pg_create_restore_point(name): a point recovery can stop at by name; its WAL position."""
    try:
        with psycopg.connect(**access.connect_kwargs(), autocommit=True) as connection:
            row = connection.execute("SELECT pg_create_restore_point(%s)::text", (name,)).fetchone()
    except psycopg.Error as error:
        raise BackupError(
            f"cannot create restore point {name} on {access.describe()}: {error}".strip()
        ) from None
    return str(row[0]) if row else ""


def snapshot_facts(connection: psycopg.Connection[Any]) -> tuple[str | None, str]:
    """The schema revision (Alembic's) and the server version, as the connection sees them."""
    revision = None
    if connection.execute("SELECT to_regclass('public.alembic_version')").fetchone()[0]:  # type: ignore[index]
        row = connection.execute("SELECT version_num FROM public.alembic_version").fetchone()
        revision = row[0] if row else None
    version = connection.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    return revision, str(version)


# Every user table of a database, as (schema, table), in name order.
USER_TABLES = (
    "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%' ORDER BY 1, 2"
)


def count_rows(connection: psycopg.Connection[Any]) -> dict[str, int]:
    """Exact row counts of every user table, as `schema.table`."""
    tables = connection.execute(USER_TABLES).fetchall()
    counts = {}
    for schema, table in tables:
        row = connection.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
        ).fetchone()
        counts[f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


# --- whole databases: through the maintenance database ------------------------------------------


def connect_admin(access: DatabaseAccess) -> psycopg.Connection[Any]:
    """A connection for CREATE/ALTER/DROP DATABASE (the maintenance database `postgres`)."""
    try:
        return psycopg.connect(**access.connect_kwargs("postgres"), autocommit=True)
    except psycopg.OperationalError as error:
        raise BackupError(
            f"cannot connect to {access.describe('postgres')}: {error}".strip()
        ) from None


def database_exists(access: DatabaseAccess, name: str) -> bool:
    with connect_admin(access) as connection:
        return (
            connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            is not None
        )


def create_database(connection: psycopg.Connection[Any], name: str, owner: str | None) -> None:
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if owner:
        create += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
    connection.execute(create)


def drop_database(connection: psycopg.Connection[Any], name: str) -> None:
    connection.execute(
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )


def rename_database(connection: psycopg.Connection[Any], old: str, new: str) -> None:
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
