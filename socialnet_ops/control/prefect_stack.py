"""Prefect's scaled architecture on this machine, as Prefect documents it ("How to scale
self-hosted Prefect"): the control plane's own PostgreSQL cluster holds Prefect's database;
Redis carries messaging, event ordering, concurrency leases and docket; API servers run without
services behind HAProxy, and one process runs the background services. Basic auth is on.

Secrets (the API credential, the database and Redis passwords) are generated once into 0600
files under `control-plane/secrets/`. Programs read them from an environment file as they start
(`sh -c '. file; exec …'`), so no supervisord config, command line or log holds one; the servers
get the database and Redis, the clients only the API credential.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from socialnet_ops.core.paths import control_plane_backup_access
from socialnet_ops.platforms.base import PlatformError
from socialnet_ops.platforms.local.pgcluster import (
    PG_SUPERUSER,
    PG_SYSTEM_USER,
    init_cluster,
    superuser_connection,
)
from socialnet_ops.platforms.local.tools import (
    ensure_secret,
    find_binary,
    read_secret,
    render,
    tail,
    write_atomic,
)

API_SERVERS = 2
PREFECT_DATABASE = "prefect"
PREFECT_ROLE = "prefect"
# Backups of Prefect's database (flow runs, deployments, the ledgers' variables) log in as this
# role: it may read every row (pg_read_all_data) and change nothing.
BACKUP_ROLE = "prefect_backup"
AUTH_USER = "socialnet"
REDIS_SYSTEM_USER = "redis"
READY_TIMEOUT = 60.0
# prefect-redis carries what one process kept in memory, so several servers share it.
REDIS_BACKED = {
    "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
    "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
    "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
}


@dataclass(frozen=True)
class StackPorts:
    balancer: int
    postgres: int
    redis: int
    api_servers: tuple[int, ...]


@dataclass(frozen=True)
class PrefectStack:
    """The files of the stack under the control plane's folder."""

    folder: Path

    @property
    def pgdata(self) -> Path:
        return self.folder / "postgres"

    @property
    def pgsocket(self) -> Path:
        return self.folder / "postgres-run"

    @property
    def redis_dir(self) -> Path:
        return self.folder / "redis"

    @property
    def secrets(self) -> Path:
        return self.folder / "secrets"

    @property
    def auth_file(self) -> Path:
        """`user:password` of Prefect's basic auth: what PREFECT_API_AUTH_STRING holds."""
        return self.secrets / "prefect-auth"

    @property
    def server_env(self) -> Path:
        return self.secrets / "prefect-server.env"

    @property
    def client_env(self) -> Path:
        return self.secrets / "prefect-client.env"

    @property
    def logs(self) -> Path:
        return self.folder / "logs"

    def ensure_credentials(self) -> None:
        ensure_secret(self.secrets / "prefect-db-password")
        ensure_secret(self.secrets / "redis-password")
        ensure_secret(self.secrets / "prefect-backup-password")
        if not self.auth_file.exists():
            credential = f"{AUTH_USER}:{secrets.token_hex(24)}\n"
            write_atomic(self.auth_file, credential, mode=0o600)

    def auth_string(self) -> str:
        return read_secret(self.auth_file)

    def database_url(self, port: int) -> str:
        password = read_secret(self.secrets / "prefect-db-password")
        return f"postgresql+asyncpg://{PREFECT_ROLE}:{password}@127.0.0.1:{port}/{PREFECT_DATABASE}"

    def superuser_url(self, ports: StackPorts) -> str:
        """For the one-time SQLite copy: the superuser over the cluster's socket."""
        return (
            f"postgresql+psycopg://{PG_SUPERUSER}@/{PREFECT_DATABASE}"
            f"?host={self.pgsocket}&port={ports.postgres}"
        )

    def redis_password(self) -> str:
        return read_secret(self.secrets / "redis-password")

    def write_environment_files(self, ports: StackPorts) -> None:
        redis_password = self.redis_password()
        server = {
            "PREFECT_API_DATABASE_CONNECTION_URL": self.database_url(ports.postgres),
            "PREFECT_SERVER_API_AUTH_STRING": self.auth_string(),
            # The services process calls the API (automations' actions) as a client.
            "PREFECT_API_AUTH_STRING": self.auth_string(),
            "PREFECT_REDIS_MESSAGING_PASSWORD": redis_password,
            "PREFECT_SERVER_DOCKET_URL": f"redis://:{redis_password}@127.0.0.1:{ports.redis}/1",
        }
        client = {"PREFECT_API_AUTH_STRING": self.auth_string()}
        for path, values in ((self.server_env, server), (self.client_env, client)):
            lines = [f"export {key}={shlex.quote(value)}" for key, value in values.items()]
            write_atomic(path, "\n".join(lines) + "\n", mode=0o600)

    def server_settings(self, ports: StackPorts) -> dict[str, str]:
        """What API servers and the services process are given besides their secrets."""
        return {
            **REDIS_BACKED,
            "PREFECT_REDIS_MESSAGING_HOST": "127.0.0.1",
            "PREFECT_REDIS_MESSAGING_PORT": str(ports.redis),
            "PREFECT_REDIS_MESSAGING_DB": "0",
            # The schema is upgraded once by `up` before any server starts, never by two at once.
            "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false",
            "PREFECT_UI_API_URL": f"http://127.0.0.1:{ports.balancer}/api",
        }

    def with_secrets(self, env_file: Path, command: list[str]) -> list[str]:
        """`command`, started with the variables of `env_file` (read at start, never shown)."""
        script = f". {shlex.quote(str(env_file))} && exec {shlex.join(command)}"
        return ["/bin/sh", "-c", script]

    # --- programs --------------------------------------------------------------------------

    def data_programs(self, ports: StackPorts) -> dict[str, tuple[list[str], str]]:
        """PostgreSQL and Redis: name -> (command, system user)."""
        postgres = [
            find_binary("postgres"),
            "-D", str(self.pgdata),
            "-p", str(ports.postgres),
            "-k", str(self.pgsocket),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "max_connections=200",
        ]  # fmt: skip
        redis = [find_binary("redis-server"), str(self.folder / "redis.conf")]
        return {"control-postgres": (postgres, PG_SYSTEM_USER), "redis": (redis, REDIS_SYSTEM_USER)}

    def server_programs(self, ports: StackPorts) -> dict[str, list[str]]:
        """The API servers (no services), the services process and the balancer."""
        prefect = find_binary("prefect")
        programs = {
            f"prefect-api-{index}": self.with_secrets(
                self.server_env,
                [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port),
                 "--no-services", "--analytics-off"],
            )
            for index, port in enumerate(ports.api_servers, start=1)
        }  # fmt: skip
        programs["prefect-services"] = self.with_secrets(
            self.server_env, [prefect, "server", "services", "start"]
        )
        programs["prefect-balancer"] = [
            find_binary("haproxy"), "-W", "-db", "-f", str(self.folder / "prefect-balancer.cfg")
        ]  # fmt: skip
        return programs

    def write_data_config(self, ports: StackPorts, say: Callable[[str], None]) -> None:
        init_cluster(self.pgdata, self.pgsocket, say)
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.redis_dir, REDIS_SYSTEM_USER, REDIS_SYSTEM_USER)
        self.redis_dir.chmod(0o700)
        config = self.folder / "redis.conf"
        write_atomic(
            config,
            "\n".join(
                [
                    "# Rendered by socialnet_ops.control.prefect_stack; holds the password (0600).",
                    "bind 127.0.0.1",
                    f"port {ports.redis}",
                    "protected-mode yes",
                    f"dir {self.redis_dir}",
                    # Streams of not-yet-handled events survive a restart of Redis.
                    "appendonly yes",
                    'save ""',
                    "daemonize no",
                    'logfile ""',
                    f"requirepass {self.redis_password()}",
                ]
            )
            + "\n",
            mode=0o600,
        )
        shutil.chown(config, REDIS_SYSTEM_USER, REDIS_SYSTEM_USER)

    def write_balancer_config(self, ports: StackPorts) -> None:
        servers = "\n".join(
            f"    server api-{index} 127.0.0.1:{port} check inter 1s fall 2 rise 2"
            for index, port in enumerate(ports.api_servers, start=1)
        )
        write_atomic(
            self.folder / "prefect-balancer.cfg",
            render(
                "prefect-balancer.cfg", state_dir=self.folder, port=ports.balancer, servers=servers
            ),
        )

    # --- start-up steps ------------------------------------------------------------------

    def bootstrap_database(self, ports: StackPorts) -> None:
        """Prefect's login role and database (idempotent; the password follows its file)."""
        from psycopg import sql

        password = read_secret(self.secrets / "prefect-db-password")
        connection = superuser_connection(
            self.pgsocket, ports.postgres, self.logs / "control-postgres.log", wait=READY_TIMEOUT
        )
        with connection:
            _ensure_login_role(connection, PREFECT_ROLE, password)
            if not connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (PREFECT_DATABASE,)
            ).fetchone():
                connection.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(PREFECT_DATABASE), sql.Identifier(PREFECT_ROLE)
                    )
                )
            self.grant_backup_role(connection, ports.postgres)

    def grant_backup_role(self, connection: Any, port: int) -> None:
        """The read-only role backups use, and the 0600 file that tells them how to log in."""
        from psycopg import sql

        _ensure_login_role(
            connection, BACKUP_ROLE, read_secret(self.secrets / "prefect-backup-password")
        )
        connection.execute(
            sql.SQL("GRANT pg_read_all_data TO {}").format(sql.Identifier(BACKUP_ROLE))
        )
        access = {
            "host": "127.0.0.1",
            "port": port,
            "user": BACKUP_ROLE,
            "database": PREFECT_DATABASE,
            "password_file": str(self.secrets / "prefect-backup-password"),
        }
        write_atomic(control_plane_backup_access(), json.dumps(access) + "\n", mode=0o600)

    def wait_for_redis(self, ports: StackPorts) -> None:
        import redis

        client = redis.Redis(
            host="127.0.0.1", port=ports.redis, password=self.redis_password(), socket_timeout=2
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                client.ping()
                return
            except redis.RedisError as error:
                if time.monotonic() > deadline:
                    raise PlatformError(
                        f"redis on port {ports.redis} not ready within {READY_TIMEOUT:.0f} s: "
                        f"{error}\n{tail(self.logs / 'redis.log')}"
                    ) from None
                time.sleep(0.3)
            finally:
                with contextlib.suppress(Exception):
                    client.close()


def _ensure_login_role(connection: Any, role: str, password: str) -> None:
    """`role` can log in with `password` (created, or its password set to the file's again)."""
    from psycopg import sql

    exists = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    connection.execute(
        sql.SQL(("ALTER" if exists else "CREATE") + " ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)
        )
    )
