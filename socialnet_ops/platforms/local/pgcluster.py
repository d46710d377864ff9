"""A PostgreSQL cluster of Debian's binaries in a folder of its own: the local platform's
database and the control plane's (Prefect's) both start this way."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from socialnet_ops.platforms.base import PlatformError
from socialnet_ops.platforms.local.tools import find_binary, tail

PG_SUPERUSER = "postgres"
# The unprivileged system user of Debian's postgresql package; PostgreSQL refuses to run as root.
PG_SYSTEM_USER = "postgres"


def init_cluster(pgdata: Path, pgsocket: Path, say: Callable[[str], None]) -> None:
    """initdb once (local socket: trust for the superuser; TCP: passwords), owned by postgres."""
    for folder in (pgdata, pgsocket):
        folder.mkdir(parents=True, exist_ok=True)
        shutil.chown(folder, PG_SYSTEM_USER, PG_SYSTEM_USER)
        folder.chmod(0o700)
    if (pgdata / "PG_VERSION").exists():
        return
    runuser = find_binary("runuser")
    reach = subprocess.run(
        [runuser, "-u", PG_SYSTEM_USER, "--", "test", "-w", str(pgdata)],
        capture_output=True,
        check=False,
    )
    if reach.returncode != 0:
        raise PlatformError(
            f"the {PG_SYSTEM_USER} user cannot reach {pgdata}: make its parent folders "
            "traversable (chmod o+x) or set SOCIALNET_STATE_DIR to a folder under /tmp"
        )
    say(f"initializing the PostgreSQL cluster in {pgdata}")
    result = subprocess.run(
        [
            runuser, "-u", PG_SYSTEM_USER, "--",
            find_binary("initdb"), "-D", str(pgdata), "-U", PG_SUPERUSER,
            "--auth-local=trust", "--auth-host=scram-sha-256",
            "--encoding=UTF8", "--no-locale", "--no-instructions",
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if result.returncode != 0:
        shutil.rmtree(pgdata, ignore_errors=True)
        raise PlatformError(f"initdb -D {pgdata} failed: {result.stderr.strip()}")


def superuser_connection(
    pgsocket: Path, port: int, log: Path, wait: float = 0.0, database: str = "postgres"
) -> Any:
    """A psycopg connection as the superuser over the cluster's socket, waiting up to `wait`."""
    import psycopg

    deadline = time.monotonic() + wait
    while True:
        try:
            return psycopg.connect(
                host=str(pgsocket),
                port=port,
                user=PG_SUPERUSER,
                dbname=database,
                autocommit=True,
                connect_timeout=3,
            )
        except psycopg.OperationalError as error:
            if time.monotonic() > deadline:
                raise PlatformError(
                    f"postgres on port {port} not ready within {wait:.0f} s: {error}\n{tail(log)}"
                ) from None
            time.sleep(0.3)
