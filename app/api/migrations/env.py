"""Alembic environment: connects with the application's own settings (SOCIALNET_DB_*)."""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, create_engine, pool, text

from app.api.core.config import Settings
from app.api.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _database_url() -> str:
    # Programmatic callers (tests, the platform's tasks) may pass a URL; otherwise the environment.
    url = config.attributes.get("database_url")
    if url is not None:
        return str(url)
    return Settings().database_url().render_as_string(hide_password=False)


# Release drills only: a migration that commits part of its work and then fails, as a data
# migration run in batches does; the deploy must restore its pre-deploy backup.
HALF_APPLIED_FAULT = "SOCIALNET_FAULT_MIGRATION"
HALF_APPLIED_TABLE = "fault_half_applied_migration"


def _command() -> str | None:
    """The alembic command line's command (`upgrade`, `current`...), None when called from code."""
    command = getattr(config.cmd_opts, "cmd", None)
    return getattr(command[0], "__name__", None) if command else None


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
    if os.environ.get(HALF_APPLIED_FAULT) == "half-applied" and _command() == "upgrade":
        connection.execute(text(f"CREATE TABLE IF NOT EXISTS {HALF_APPLIED_TABLE} (id int)"))
        connection.commit()
        raise RuntimeError(
            f"injected fault ({HALF_APPLIED_FAULT}=half-applied): the migration failed after "
            f"committing part of its work (table {HALF_APPLIED_TABLE})"
        )


def run_migrations_offline() -> None:
    context.configure(url=_database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(_database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
