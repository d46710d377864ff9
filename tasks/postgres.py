"""PostgreSQL tasks: schema migrations (Alembic, run from the release's own code)."""

from __future__ import annotations

import sys

from prefect import get_run_logger, task

from socialnet_ops.builds import load_build
from socialnet_ops.environments import load_environment
from socialnet_ops.migrations import contracting_statements
from socialnet_ops.platforms import platform_for
from socialnet_ops.process import stream


class ContractingMigrationError(Exception):
    """A pending migration would break the release still serving."""


def _alembic(environment: str, version: str, *arguments: str, quiet: bool = False) -> list[str]:
    logger = get_run_logger()
    build = load_build(environment, version)
    assert build.path is not None
    platform = platform_for(load_environment(environment))
    result = stream(
        [
            sys.executable,
            "-m",
            "alembic",
            "-c",
            str(build.path / "app/api/alembic.ini"),
            *arguments,
        ],
        (lambda _line: None) if quiet else logger.info,
        cwd=build.path,
        env={"PYTHONPATH": str(build.path), **platform.database_env()},
    )
    return result.lines


@task(name="check-migrations-expand-only")
def check_migrations(environment: str, version: str, allow_contracting: bool = False) -> list[str]:
    """The SQL the pending migrations would run, refused when it drops, renames or retypes."""
    current_lines = _alembic(environment, version, "current", quiet=True)
    revisions = [line.split()[0] for line in current_lines if line and not line.startswith("INFO")]
    start = revisions[0] if revisions else "base"
    sql = "\n".join(_alembic(environment, version, "upgrade", f"{start}:head", "--sql", quiet=True))
    contracting = contracting_statements(sql)
    if contracting and not allow_contracting:
        listed = "; ".join(f"{why}: {statement[:120]}" for statement, why in contracting)
        raise ContractingMigrationError(
            f"release {version} has migrations that are not expand-only ({listed}); the release "
            "still serving would break. Split the change, or pass allow_contracting_migrations=True."
        )
    pending = [line for line in sql.splitlines() if line.startswith("-- Running upgrade")]
    get_run_logger().info("pending migrations from %s: %s", start, pending or "none")
    return pending


@task(name="migrate-database", retries=2, retry_delay_seconds=3)
def migrate(environment: str, version: str) -> None:
    """Upgrade the schema to the release's head; Alembic makes a rerun a no-op."""
    _alembic(environment, version, "upgrade", "head")
