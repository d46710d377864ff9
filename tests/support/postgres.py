"""A throw-away PostgreSQL server for tests and benchmarks.

`initdb` into a temporary directory, `postgres` on a free 127.0.0.1 port with its unix socket in
that directory, trust authentication, durability off (speed over crash safety: it is thrown away).
When running as root (containers, CI) the server runs as an unprivileged system user, since
PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

_BINARY_SEARCH_PATTERNS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/opt/homebrew/bin")
_UNPRIVILEGED_USERS = ("postgres", "nobody")


class PostgresUnavailableError(RuntimeError):
    """The PostgreSQL binaries are not installed, or the server could not be started."""


def find_postgres_bin_dir() -> Path:
    """The directory holding initdb/postgres/pg_dump: PATH first, then usual install places."""
    on_path = shutil.which("initdb")
    if on_path is not None:
        return Path(on_path).resolve().parent
    for pattern in _BINARY_SEARCH_PATTERNS:
        for candidate in sorted(glob.glob(pattern), reverse=True):
            if (Path(candidate) / "initdb").is_file():
                return Path(candidate)
    raise PostgresUnavailableError(
        "PostgreSQL binaries (initdb, postgres) not found on PATH or in /usr/lib/postgresql/*/bin; "
        "install postgresql (e.g. apt-get install postgresql-15)"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One private PostgreSQL instance; usable as a context manager.

    >>> with PostgresServer() as server:
    ...     dsn = server.create_database("app")
    """

    superuser = "postgres"
    host = "127.0.0.1"

    def __init__(self, bin_dir: Path | None = None, settings: Sequence[str] = ()) -> None:
        self.bin_dir = bin_dir or find_postgres_bin_dir()
        self.extra_settings = tuple(settings)
        self.port = 0
        self.base_dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._run_as = _unprivileged_user() if os.geteuid() == 0 else None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> PostgresServer:
        if self._process is not None:
            return self
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="socialnet-pg-"))
            self._give_to_server_user(self.base_dir)
            self._run(
                self.binary("initdb"),
                "--pgdata",
                str(self.data_dir),
                "--username",
                self.superuser,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            )
        # A restarted server keeps its port, so clients configured with it can reconnect.
        self.port = self.port or free_port()
        command = [
            self.binary("postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-k",
            str(self.socket_dir),
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ]
        for setting in self.extra_settings:
            command += ["-c", setting]
        log = (self.base_dir / "postgres.log").open("ab")
        self._process = subprocess.Popen(
            self._as_server_user(command), stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self._wait_until_ready(timeout_s)
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Fast shutdown; the data directory is kept so start() can bring the same data back."""
        if self._process is None:
            return
        process, self._process = self._process, None
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def destroy(self) -> None:
        self.stop()
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.destroy()

    # --- addresses ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def run_as_user(self) -> str | None:
        """The system user the server runs as (None: as we are)."""
        return self._run_as.pw_name if self._run_as else None

    @property
    def data_dir(self) -> Path:
        assert self.base_dir is not None, "start() the server first"
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.base_dir is not None, "start() the server first"
        return self.base_dir

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{self.superuser}@{self.host}:{self.port}/{database}"

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def sqlalchemy_url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.superuser}@{self.host}:{self.port}/{database}"

    def binary(self, name: str) -> str:
        return str(self.bin_dir / name)

    # --- databases ---------------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Creates (or recreates, empty) a database and returns its DSN."""
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    # --- internals ---------------------------------------------------------------------------

    def _as_server_user(self, command: list[str]) -> list[str]:
        if self._run_as is None:
            return command
        # setpriv execs in place (unlike runuser/su), so signals reach postgres itself.
        return [
            "setpriv",
            f"--reuid={self._run_as.pw_uid}",
            f"--regid={self._run_as.pw_gid}",
            "--init-groups",
            "--",
            *command,
        ]

    def _give_to_server_user(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)

    def _run(self, *command: str) -> None:
        result = subprocess.run(
            self._as_server_user(list(command)),
            capture_output=True,
            text=True,
            cwd=self.base_dir,
            check=False,
        )
        if result.returncode != 0:
            raise PostgresUnavailableError(
                f"{Path(command[0]).name} failed ({result.returncode}): {result.stderr.strip()}"
            )

    def _wait_until_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                break
            try:
                with psycopg.connect(self.dsn, connect_timeout=2):
                    return
            except psycopg.OperationalError as error:
                last_error = error
                time.sleep(0.05)
        log_tail = self._log_tail()
        self.stop()
        raise PostgresUnavailableError(
            f"postgres did not become ready on port {self.port}: {last_error}\n{log_tail}"
        )

    def _log_tail(self, lines: int = 20) -> str:
        assert self.base_dir is not None
        with contextlib.suppress(OSError):
            text = (self.base_dir / "postgres.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""


def _unprivileged_user() -> pwd.struct_passwd:
    for name in _UNPRIVILEGED_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresUnavailableError(
        "running as root but no unprivileged user to run postgres as "
        f"(tried {', '.join(_UNPRIVILEGED_USERS)}); create one, e.g. `useradd --system postgres`"
    )
