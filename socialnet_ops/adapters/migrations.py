"""Schema migrations with Alembic, run from the release's own code (its build) against the database
the platform names."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from socialnet_ops.adapters.postgres import RunLog
from socialnet_ops.adapters.process import stream
from socialnet_ops.core.migrations import contracting_statements
from socialnet_ops.core.release import Build


class ContractingMigrationError(Exception):
    """A pending migration would break the release still serving."""


def run_alembic(
    build: Build, database_env: Mapping[str, str], *arguments: str, log: RunLog
) -> list[str]:
    """Alembic of `build` with `arguments`; every output line goes to `log` and is returned."""
    assert build.path is not None
    result = stream(
        [
            sys.executable,
            "-m",
            "alembic",
            "-c",
            str(build.path / "app/api/alembic.ini"),
            *arguments,
        ],
        log.info,  # every line, also of the runs only parsed here: the run shows what ran
        cwd=build.path,
        # The build's runtime settings reach migrations too (a migration fault drill).
        env={"PYTHONPATH": str(build.path), **build.runtime_env, **database_env},
    )
    return result.lines


def pending_migrations(
    build: Build, database_env: Mapping[str, str], allow_contracting: bool, *, log: RunLog
) -> list[str]:
    """The SQL the pending migrations would run, refused when it drops, renames or retypes."""
    current_lines = run_alembic(build, database_env, "current", log=log)
    revisions = [line.split()[0] for line in current_lines if line and not line.startswith("INFO")]
    start = revisions[0] if revisions else "base"
    sql = "\n".join(run_alembic(build, database_env, "upgrade", f"{start}:head", "--sql", log=log))
    contracting = contracting_statements(sql)
    if contracting and not allow_contracting:
        listed = "; ".join(f"{why}: {statement[:120]}" for statement, why in contracting)
        raise ContractingMigrationError(
            f"release {build.version} has migrations that are not expand-only ({listed}); the "
            "release still serving would break. Split the change, or pass "
            "allow_contracting_migrations=True."
        )
    pending = [line for line in sql.splitlines() if line.startswith("-- Running upgrade")]
    log.info("pending migrations from %s: %s", start, pending or "none")
    return pending
