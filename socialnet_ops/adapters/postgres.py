"""PostgreSQL as the backups see it: connections that read a server's state."""

from __future__ import annotations

from typing import Any

import psycopg

from socialnet_ops.core.backups import BackupError, DatabaseAccess, archiver_problem


def read_archiver_status(access: DatabaseAccess) -> dict[str, Any]:
    """`pg_stat_archiver` of a server, with `problem` set when WAL is not being archived.

    For `socialnet-ops status` and the base-backup flow; the only function here that connects.
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
