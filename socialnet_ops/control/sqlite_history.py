"""The upgrade path from the first control plane (one Prefect server on SQLite) to the scaled one
(PostgreSQL): every row of the SQLite database is copied into the new one, so flow runs, logs,
events, deployments, blocks and automations stay.

Prefect has no tool for this. Both databases are first brought to the same schema (Prefect's own
migrations), then the rows are copied table by table through Prefect's own ORM tables, whose
column types convert between the two dialects. The copy runs before any server has started, as
the superuser with triggers off (`session_replication_role = replica`): flow runs and their
states point at each other, so no table order satisfies the foreign keys row by row.
"""

from __future__ import annotations

import os
from pathlib import Path

from socialnet_ops.adapters.process import stream
from socialnet_ops.platforms.local.tools import find_binary

BATCH = 2000


def _upgrade_sqlite(sqlite_path: Path) -> None:
    """Bring the old database to this Prefect's schema, as its server would at start."""
    env = {
        **os.environ,
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{sqlite_path}",
    }
    stream(
        [find_binary("prefect"), "server", "database", "upgrade", "-y"], lambda _line: None, env=env
    )


def copy_history(sqlite_path: Path, postgres_url: str) -> dict[str, int]:
    """Rows copied per table (only tables that had any). `postgres_url`: a superuser's."""
    import sqlalchemy as sa
    from prefect.server.database.orm_models import Base
    from sqlalchemy.dialects.postgresql import insert

    source = sa.create_engine(f"sqlite:///{sqlite_path}")
    target = sa.create_engine(postgres_url)
    copied: dict[str, int] = {}
    try:
        with source.connect() as reading, target.begin() as writing:
            writing.execute(sa.text("SET LOCAL session_replication_role = replica"))
            for table in Base.metadata.sorted_tables:
                if not sa.inspect(reading).has_table(table.name):
                    continue
                rows = reading.execute(table.select()).mappings()
                count = 0
                while batch := [dict(row) for row in rows.fetchmany(BATCH)]:
                    writing.execute(insert(table).on_conflict_do_nothing(), batch)
                    count += len(batch)
                if count:
                    copied[table.name] = count
    finally:
        source.dispose()
        target.dispose()
    return copied


def migrate_sqlite_history(sqlite_path: Path, postgres_url: str) -> str | None:
    """Copy an old SQLite control plane's history once; its file is kept, renamed `.migrated`.

    Returns a one-line summary, or None when there is nothing to migrate.
    """
    if not sqlite_path.exists():
        return None
    _upgrade_sqlite(sqlite_path)
    copied = copy_history(sqlite_path, postgres_url)
    sqlite_path.rename(sqlite_path.with_name(sqlite_path.name + ".migrated"))
    runs = copied.get("flow_run", 0)
    return f"{runs} flow run(s), {sum(copied.values())} row(s) in {len(copied)} table(s)"
