"""The local platform: one supervisord per environment runs the whole stack on 127.0.0.1.

Programs: PostgreSQL, the API replicas (stable and canary tracks), the front, HAProxy (the edge,
weights changed through its runtime API), Prometheus, the AWS emulator, an OpenBao dev server and
an image registry. The API and the front run as containers of the build's images where it has
them (see `runtime.py`).
State, configuration and logs live under `.local/<env>/` (see `socialnet_ops.core.paths`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any, Literal

import httpx

from socialnet_ops.adapters import vault
from socialnet_ops.adapters.pgbackrest import install_config, pgbackrest_binary, read_cipher_pass
from socialnet_ops.adapters.process import pid_alive
from socialnet_ops.core.backups import EngineAccess
from socialnet_ops.core.environments import STICKY_COOKIE, Environment
from socialnet_ops.core.environments import LocalPlatform as LocalSettings
from socialnet_ops.core.ledger import CanaryRecord, ControlRequest
from socialnet_ops.core.paths import environment_state_dir, repo_root
from socialnet_ops.core.physical_backups import (
    EngineSetup,
    Repository,
    archiving_settings,
    render_config,
)
from socialnet_ops.core.secrets_catalog import DB_LOGIN_ROLES, DB_OWNER, RuntimeSecrets
from socialnet_ops.platforms.base import (
    Build,
    Endpoints,
    PlatformError,
    PlatformStatus,
    ProgramStatus,
    Progress,
    ReplicaNotReadyError,
    Track,
)
from socialnet_ops.platforms.local.haproxy import (
    HAProxyRuntime,
    TrafficRules,
    server_lines,
    slot_names,
    track_weights,
)
from socialnet_ops.platforms.local.pgcluster import (
    PG_SYSTEM_USER,
    init_cluster,
    superuser_connection,
)
from socialnet_ops.platforms.local.runtime import AppRuntime, ProgramSpec
from socialnet_ops.platforms.local.state import (
    BASE_PORTS,
    BuildRecord,
    PlatformState,
    Replica,
    StateStore,
    TrackState,
)
from socialnet_ops.platforms.local.supervisor import Supervisor, unexpected_exits
from socialnet_ops.platforms.local.tools import (
    ensure_secret,
    ensure_tls_pem,
    find_binary,
    free_port,
    port_answers,
    port_is_free,
    read_secret,
    render,
    s3_tls_config,
    supervisor_quote,
    tail,
    write_atomic,
)

DB_NAME = "socialnet"
# The edge's routing names when release.traffic names none (its rules then match nothing).
DEFAULT_CANARY_HEADER = "X-Canary"
DEFAULT_CANARY_COOKIE = "socialnet-canary"
# The owner role of the database (NOLOGIN); replicas log in as one of DB_LOGIN_ROLES, named in Vault.
DB_USER = DB_OWNER
START_TIMEOUT = 60.0
# New replicas starting at the same time during a rollout.
SURGE = 2
# Which long-lived program listens on which recorded port (for "port in use" errors).
PORT_PROGRAMS = {
    "edge": "haproxy (edge frontend)",
    "exporter": "haproxy (Prometheus exporter)",
    "front": "front",
    "postgres": "postgres",
    "prometheus": "prometheus",
    "moto": "moto (AWS emulator)",
    "openbao": "openbao",
    "registry": "registry (docker-registry)",
    "s3tls": "s3tls (HAProxy: TLS in front of the AWS emulator, for pgBackRest)",
    "pushgateway": "pushgateway (Prometheus Pushgateway)",
}


def _quiet(_: str) -> None:
    return None


def program_name(track: Track, version: str, index: int) -> str:
    """`api-stable-1_2_3-1`: supervisord names allow no ':' and files no '/'; keep it plain."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", version)
    return f"api-{track}-{safe}-{index}"


class LocalPlatform:
    """The Platform protocol on this machine, plus start/stop of the whole environment."""

    # Replicas read their secrets from files at start: a rotation installs, rolls, revokes.
    rotates_secrets = True

    def __init__(self, environment: Environment) -> None:
        self._environment_model = environment
        if not isinstance(environment.platform, LocalSettings):
            raise PlatformError(
                f"environment {environment.name!r} runs on {environment.platform.kind}, "
                "not on the local platform"
            )
        self.environment = environment.name
        self.settings: LocalSettings = environment.platform
        self.state_dir = environment_state_dir(environment.name)
        self.store = StateStore(self.state_dir, environment.name)
        self.supervisor = Supervisor(self.state_dir / "supervisor.sock")
        self.haproxy = HAProxyRuntime(self.state_dir / "haproxy" / "haproxy.sock")
        self.runtime = AppRuntime(self.environment, self.state_dir, self.settings)

    # --- paths ---------------------------------------------------------------------------------

    @property
    def _conf(self) -> Path:
        return self.state_dir / "supervisord.conf"

    @property
    def _programs_dir(self) -> Path:
        return self.state_dir / "programs"

    @property
    def _logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def _secrets(self) -> Path:
        return self.state_dir / "secrets"

    @property
    def db_password_file(self) -> Path:
        return self._secrets / "db-password"

    @property
    def token_secret_file(self) -> Path:
        return self._secrets / "token-secret"

    @property
    def token_secret_previous_file(self) -> Path:
        return self._secrets / "token-secret-previous"

    @property
    def webhook_token_file(self) -> Path:
        return self._secrets / "webhook-token"

    @property
    def db_user_file(self) -> Path:
        """The login role the replicas use (not secret; next to the password it goes with)."""
        return self._secrets / "db-user"

    @property
    def vault_token_file(self) -> Path:
        """The dev server's root token: only the local Vault bootstrap uses it."""
        return self._secrets / "openbao-root-token"

    def vault_secret_id_file(self, consumer: str = "flows") -> Path:
        """AppRole secret id of a consumer of this environment's Vault (flows, webhooks)."""
        return self._secrets / (
            "vault-secret-id" if consumer == "flows" else f"vault-secret-id-{consumer}"
        )

    def vault_secret_id_files(self) -> dict[str, Path]:
        """The secret id files the bootstrap fills: the flows' and the webhook receiver's."""
        return {consumer: self.vault_secret_id_file(consumer) for consumer in ("flows", "webhooks")}

    @property
    def vault_address(self) -> str:
        ports = self.store.load().ports
        if "openbao" not in ports:
            raise PlatformError(f"local platform {self.environment} was never started")
        return f"http://127.0.0.1:{ports['openbao']}"

    @property
    def _pgdata(self) -> Path:
        return self.state_dir / "pgdata"

    @property
    def _pgsocket(self) -> Path:
        return self.state_dir / "pgsocket"

    @property
    def _pgbackrest_config(self) -> Path:
        return self.state_dir / "pgbackrest" / "pgbackrest.conf"

    @property
    def _targets_file(self) -> Path:
        return self.state_dir / "prometheus" / "targets" / "api.json"

    # --- lifecycle -----------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self.supervisor.is_running()

    def start(self, progress: Progress | None = None) -> Endpoints:
        """Start every program (idempotent: a running platform is left as it is)."""
        say = progress or _quiet
        with self.store.locked():
            binaries = self._binaries()
            for folder in ("logs", "programs", "haproxy", "prometheus/targets", "prometheus/data"):
                (self.state_dir / folder).mkdir(parents=True, exist_ok=True)
            self._logs.chmod(0o700)
            self._programs_dir.chmod(0o700)
            # The only secret generated here: the dev server's root token, for the bootstrap.
            # Every other secret comes from Vault (`_bootstrap_vault`).
            ensure_secret(self.vault_token_file)
            state = self.store.load()
            for key in BASE_PORTS:
                if key not in state.ports:
                    state.ports[key] = free_port(state.taken_ports())
            self.store.save(state)

            running = self.supervisor.is_running()
            if not running:
                self._check_ports_free(state)
            init_cluster(self._pgdata, self._pgsocket, say)
            ensure_tls_pem(self._s3_tls_pem)
            changed = self._render_configs(state, binaries)
            if not running:
                say(f"starting supervisord for environment {self.environment}")
                self._start_supervisord(binaries["supervisord"])
            else:
                self.supervisor.update()
                if "haproxy.cfg" in changed:
                    say("haproxy.cfg changed: restarting haproxy")
                    self.supervisor.restart("haproxy")
                if "prometheus.yml" in changed:
                    self.supervisor.restart("prometheus")
            self._wait_base_programs(state, say)
            self._bootstrap_database(state, say)
            self._bootstrap_vault(say)
            self._apply_edge(state)
            self._write_targets(state)
            say(f"local platform {self.environment} running at {self.endpoints().edge_url}")
            return self.endpoints()

    def stop(self, progress: Progress | None = None) -> None:
        """Stop every program and supervisord (idempotent); state and data stay for the next start."""
        say = progress or _quiet
        with self.store.locked():
            if not self.supervisor.is_running():
                return
            pid = self._supervisord_pid()
            say(f"stopping local platform {self.environment}")
            # PostgreSQL first: the WAL it archives while it shuts down goes through the TLS
            # front to the emulator, which must still be there.
            self.supervisor.shutdown(first=("postgres",))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if pid is None or not pid_alive(pid):
                    break
                time.sleep(0.2)
            else:
                raise PlatformError(f"supervisord (pid {pid}) did not stop within 60 s")
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / "supervisor.sock").unlink()
            self.runtime.remove_all()

    def _binaries(self) -> dict[str, str]:
        names = ("supervisord", "haproxy", "prometheus", "postgres", "initdb", "runuser")
        binaries = {name: find_binary(name) for name in names}
        binaries["moto_server"] = find_binary("moto_server")
        binaries["bao"] = find_binary("bao")
        binaries["prometheus-pushgateway"] = find_binary("prometheus-pushgateway")
        return binaries

    def _check_ports_free(self, state: PlatformState) -> None:
        busy = [
            (port, PORT_PROGRAMS[key])
            for key, port in state.ports.items()
            if not port_is_free(port)
        ]
        busy += [(r.port, r.program) for r in state.replicas() if not port_is_free(r.port)]
        if busy:
            names = ", ".join(f"port {port} (for {program})" for port, program in busy)
            raise PlatformError(
                f"{names} on 127.0.0.1 already in use by another process (`ss -ltnp` shows which; "
                "maybe a leftover of a supervisord that was killed); stop that process or remove "
                f"the port from {self.store.path} to pick a new one"
            )

    def _supervisord_pid(self) -> int | None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int((self.state_dir / "supervisord.pid").read_text().strip())
        return None

    def _start_supervisord(self, supervisord: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "supervisor.sock").unlink()
        # The programs must not inherit the caller's settings (tests, flows): they get their own.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOCIALNET_")}
        result = subprocess.run(
            [supervisord, "-c", str(self._conf)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if result.returncode != 0:
            raise PlatformError(
                f"supervisord -c {self._conf} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}"
            )
        deadline = time.monotonic() + 15
        while not self.supervisor.is_running():
            if time.monotonic() > deadline:
                log = tail(self._logs / "supervisord.log")
                raise PlatformError(f"supervisord did not answer on its socket within 15 s:\n{log}")
            time.sleep(0.1)

    # --- configuration -------------------------------------------------------------------------

    def _program(
        self,
        name: str,
        command: list[str],
        *,
        directory: Path,
        env: dict[str, str] | None = None,
        user: str = "root",
        priority: int = 50,
        stopsignal: str = "TERM",
        stopwaitsecs: int = 15,
    ) -> str:
        variables = {"SOCIALNET_ENVIRONMENT": self.environment, **(env or {})}
        environment_vars = ",".join(
            f"{key}={supervisor_quote(value)}" for key, value in sorted(variables.items())
        )
        return render(
            "program.conf",
            environment=self.environment,
            name=name,
            command=" ".join(shlex.quote(part) for part in command).replace("%", "%%"),
            directory=directory,
            user=user,
            environment_vars=environment_vars,
            priority=priority,
            stopsignal=stopsignal,
            stopwaitsecs=stopwaitsecs,
            state_dir=self.state_dir,
        )

    def _spec_program(self, name: str, spec: ProgramSpec, **options: Any) -> str:
        return self._program(name, spec.command, directory=spec.directory, env=spec.env, **options)

    def _render_configs(self, state: PlatformState, binaries: dict[str, str]) -> set[str]:
        """Write supervisord, HAProxy and Prometheus configs; return the names that changed."""
        ports = state.ports
        sd = self.state_dir
        changed: set[str] = set()
        files = {
            self._conf: render("supervisord.conf", environment=self.environment, state_dir=sd),
            sd / "haproxy" / "haproxy.cfg": self._haproxy_cfg(state),
            sd / "haproxy" / "s3-tls.cfg": s3_tls_config(
                self.environment, ports["s3tls"], self._s3_tls_pem, ports["moto"]
            ),
            sd / "prometheus" / "prometheus.yml": render(
                "prometheus.yml",
                environment=self.environment,
                state_dir=sd,
                exporter_port=ports["exporter"],
                pushgateway_port=ports["pushgateway"],
            ),
        }
        for path, text in files.items():
            if write_atomic(path, text):
                changed.add(path.name)
        haproxy_cfg = sd / "haproxy" / "haproxy.cfg"
        # The routing rules' pattern files must exist for HAProxy to start; they start empty.
        for name in TrafficRules().files():
            pattern_file = sd / "haproxy" / name
            if not pattern_file.exists():
                pattern_file.write_text("")
        if "haproxy.cfg" in changed:
            check = subprocess.run(
                [binaries["haproxy"], "-c", "-q", "-f", str(haproxy_cfg)],
                capture_output=True,
                text=True,
                check=False,
            )
            if check.returncode != 0:
                raise PlatformError(f"{haproxy_cfg} is invalid: {check.stderr.strip()}")
        # The root token reaches the dev server from its 0600 file, not through this program's
        # config; the banner lines that echo it are dropped from the log, and -dev-no-store-token
        # keeps it out of ~/.vault-token.
        bao_command = (
            f'BAO_DEV_ROOT_TOKEN_ID="$(cat {shlex.quote(str(self.vault_token_file))})" '
            f"{shlex.quote(binaries['bao'])} server -dev -dev-no-store-token "
            f"-dev-listen-address=127.0.0.1:{ports['openbao']} 2>&1 "
            "| sed -u -e '/^Root Token:/d' -e '/^Unseal Key:/d'"
        )
        programs = {
            "postgres": self._program(
                "postgres",
                [
                    binaries["postgres"],
                    "-D", str(self._pgdata),
                    "-p", str(ports["postgres"]),
                    "-k", str(self._pgsocket),
                    "-c", "listen_addresses=127.0.0.1",
                    *self._wal_archiving(),
                ],
                directory=self._pgdata,
                user=PG_SYSTEM_USER,
                priority=10,
                stopsignal="INT",  # fast shutdown: roll back open transactions, exit cleanly
                stopwaitsecs=30,
            ),
            # The emulator and its TLS front start before PostgreSQL and stop after it: WAL
            # archived during PostgreSQL's shutdown must still reach the bucket.
            "moto": self._program(
                "moto",
                [binaries["moto_server"], "-H", "127.0.0.1", "-p", str(ports["moto"])],
                directory=sd,
                priority=5,
            ),
            "s3tls": self._program(
                "s3tls",
                [binaries["haproxy"], "-db", "-f", str(sd / "haproxy" / "s3-tls.cfg")],
                directory=sd / "haproxy",
                priority=5,
            ),
            "openbao": self._program(
                "openbao",
                ["/bin/sh", "-c", bao_command],
                directory=sd,
                priority=20,
            ),
            "pushgateway": self._program(
                "pushgateway",
                [
                    binaries["prometheus-pushgateway"],
                    f"--web.listen-address=127.0.0.1:{ports['pushgateway']}",
                    f"--persistence.file={sd / 'prometheus' / 'pushgateway.metrics'}",
                    "--persistence.interval=30s",
                ],
                directory=sd / "prometheus",
                priority=20,
            ),
            "front": self._front_program(state),
            "haproxy": self._program(
                "haproxy",
                [binaries["haproxy"], "-db", "-f", str(haproxy_cfg)],
                directory=sd / "haproxy",
                priority=60,
            ),
            "prometheus": self._program(
                "prometheus",
                [
                    binaries["prometheus"],
                    f"--config.file={sd / 'prometheus' / 'prometheus.yml'}",
                    f"--storage.tsdb.path={sd / 'prometheus' / 'data'}",
                    f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                    "--storage.tsdb.retention.time=2d",
                ],
                directory=sd / "prometheus",
                priority=70,
            ),
        }  # fmt: skip
        if self.runtime.problem() is None:
            programs["registry"] = self._spec_program(
                "registry", self.runtime.registry_program(ports["registry"]), priority=20
            )
        log_size = self._log_size()
        for name, text in programs.items():
            if write_atomic(self._programs_dir / f"{name}.conf", text, mode=0o600):
                changed.add(name)
            state.log_offsets.setdefault(name, log_size)
        self.store.save(state)
        return changed

    def _haproxy_cfg(self, state: PlatformState) -> str:
        traffic = self._environment_model.release.traffic
        return render(
            "haproxy.cfg",
            environment=self.environment,
            state_dir=self.state_dir,
            edge_port=state.ports["edge"],
            exporter_port=state.ports["exporter"],
            front_port=state.ports["front"],
            api_servers=server_lines(),
            canary_servers=server_lines(("canary",)),
            stable_servers=server_lines(("stable",)),
            canary_header=traffic.header or DEFAULT_CANARY_HEADER,
            canary_cookie=traffic.cookie or DEFAULT_CANARY_COOKIE,
            sticky_cookie=STICKY_COOKIE,
        )

    def _front_program(self, state: PlatformState, program: str = "front", port: int = 0) -> str:
        """The front of the stable build (its image), or the static server of the working tree."""
        spec = self.runtime.front_program(
            state.front_image, port or state.ports["front"], repo_root(), program
        )
        # nginx finishes the requests it has on SIGQUIT (podman passes it on); TERM drops them.
        signal = "QUIT" if state.front_image else "TERM"
        return self._spec_program(program, spec, priority=30, stopsignal=signal)

    def _update_front(self, build: Build, say: Progress) -> None:
        """Run the front of the stable `build`, restarted only when its files changed, and then
        without a gap: a stand-in of the new front takes the traffic while `front` restarts."""
        state = self.store.load()
        wanted = self.runtime.front_image(state.front_image, build)
        if wanted == state.front_image:
            return
        say(f"the front changes with {build.version}: replacing it")
        state.front_image = wanted
        standin, port = "front-next", free_port(state.taken_ports())
        self._run_front(state, standin, port)
        self.haproxy.point_front(port)
        self.store.save(state)
        self._run_front(state, "front", state.ports["front"])
        self.haproxy.point_front(state.ports["front"])
        self.supervisor.remove(standin)
        self.runtime.remove(standin)
        with contextlib.suppress(FileNotFoundError):
            (self._programs_dir / f"{standin}.conf").unlink()
        self.supervisor.update()

    def _run_front(self, state: PlatformState, program: str, port: int) -> None:
        """(Re)start front program `program` on `port` and wait until it answers."""
        conf = self._front_program(state, program, port)
        if write_atomic(self._programs_dir / f"{program}.conf", conf, mode=0o600):
            self.supervisor.update()
        deadline = time.monotonic() + START_TIMEOUT
        while not port_answers(port):
            if time.monotonic() > deadline:
                log = self._logs / f"{program}.log"
                raise PlatformError(
                    f"{program} did not listen on port {port} within {START_TIMEOUT:.0f} s:\n{tail(log)}"
                )
            time.sleep(0.1)

    def _log_size(self) -> int:
        try:
            return (self._logs / "supervisord.log").stat().st_size
        except FileNotFoundError:
            return 0

    # --- PostgreSQL ----------------------------------------------------------------------------

    def _superuser_connection(
        self, state: PlatformState | None = None, wait: float = 0.0, database: str = "postgres"
    ) -> Any:
        port = (state or self.store.load()).ports["postgres"]
        return superuser_connection(
            self._pgsocket, port, self._logs / "postgres.log", wait, database
        )

    def _bootstrap_database(self, state: PlatformState, say: Progress) -> None:
        """Create the owner role and the database (idempotent); logins come with the secrets."""
        from psycopg import sql

        connection = self._superuser_connection(state, wait=START_TIMEOUT)
        with connection:
            role = connection.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (DB_OWNER,)
            ).fetchone()
            if not role:
                say(f"creating role {DB_OWNER} and database {DB_NAME}")
                connection.execute(
                    sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(DB_OWNER))
                )
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)
            ).fetchone()
            if not exists:
                connection.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(DB_NAME), sql.Identifier(DB_OWNER)
                    )
                )
        # Releases mark where a recovery can stop (`release-<version>-<env>`). A function's
        # rights are each database's own (template1's are copied into a database a restore
        # makes); the app's sessions act as the owner role.
        for database in (DB_NAME, "template1"):
            with self._superuser_connection(state, database=database) as connection:
                connection.execute(
                    sql.SQL("GRANT EXECUTE ON FUNCTION pg_create_restore_point(text) TO {}").format(
                        sql.Identifier(DB_OWNER)
                    )
                )

    # --- secrets -------------------------------------------------------------------------------

    def _bootstrap_vault(self, say: Progress) -> None:
        """Bootstrap this environment's OpenBao with the dev root token, then install its secrets.

        The dev server keeps everything in memory: after a restart, a missing secret is re-seeded
        from the copy installed last, so Vault, PostgreSQL and the replicas keep agreeing.
        """

        environment = self._environment_model
        check = vault.check_health(self.vault_address, wait=15)
        admin = vault.VaultSession(
            self.vault_address,
            vault.TokenLogin(lambda: read_secret(self.vault_token_file), name="the dev root token"),
        )
        changes = vault.bootstrap_environment(
            admin,
            environment=self.environment,
            mount=environment.vault.mount,
            flows_role=environment.vault.auth.role,
            secret_id_files=self.vault_secret_id_files(),
            recover=self.installed_secret,
        )
        created = [
            f"{c.what}: {c.action}" for c in changes if c.action not in {"kept", "unchanged"}
        ]
        say(
            f"OpenBao {check.get('version', '')} bootstrapped"
            + (f" ({'; '.join(created)})" if created else " (nothing to change)")
        )
        self.install_secrets(
            vault.read_runtime_secrets(admin, environment.vault.mount, self.environment), say
        )

    def installed_secret(self, name: str) -> dict[str, str] | None:
        """The copy of secret `name` installed last (to re-seed a forgetful dev Vault), or None."""
        if name == "database":
            if not (self.db_user_file.exists() and self.db_password_file.exists()):
                return None
            user = read_secret(self.db_user_file)
            if user not in DB_LOGIN_ROLES:
                return None
            return {"username": user, "password": read_secret(self.db_password_file)}
        if name == "api":
            if not self.token_secret_file.exists():
                return None
            previous = self.token_secret_previous_file
            return {
                "token_secret": read_secret(self.token_secret_file),
                "token_secret_previous": read_secret(previous) if previous.exists() else "",
            }
        if name == "webhooks" and self.webhook_token_file.exists():
            return {"gitlab_token": read_secret(self.webhook_token_file)}
        if name == "backups" and self._pgbackrest_config.exists():
            cipher_pass = read_cipher_pass(self._pgbackrest_config)
            return {"cipher_pass": cipher_pass} if cipher_pass else None
        return None

    def install_secrets(self, values: RuntimeSecrets, progress: Progress | None = None) -> str:
        """Hand the app its secrets: the login role's password set in PostgreSQL, then 0600 files
        the replicas read at start (running replicas keep theirs until they are rolled).

        The password reaches PostgreSQL as a SCRAM verifier computed here: the plain text never
        enters a statement, so no server log can hold it.
        """
        say = progress or _quiet
        from psycopg import sql

        user = values.db_user
        if user not in DB_LOGIN_ROLES:
            raise PlatformError(
                f"environment {self.environment}: database login {user!r} (from Vault) is not one "
                f"of {', '.join(DB_LOGIN_ROLES)}"
            )
        with self.store.locked():
            connection = self._superuser_connection(wait=START_TIMEOUT)
            with connection:
                exists = connection.execute(
                    "SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)
                ).fetchone()
                if not exists:
                    say(f"creating login role {user} (member of {DB_OWNER})")
                    connection.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(user)))
                connection.execute(
                    sql.SQL("GRANT {} TO {}").format(sql.Identifier(DB_OWNER), sql.Identifier(user))
                )
                # A restore over the live database ends the app's sessions (the other login role)
                # to swap it in; pg_signal_backend cannot signal superuser sessions.
                connection.execute(
                    sql.SQL("GRANT pg_signal_backend TO {}").format(sql.Identifier(user))
                )
                # Restores and drills create scratch databases; base backups need replication.
                # Sessions act as the owner (below), so the owner needs CREATEDB too.
                connection.execute(
                    sql.SQL("ALTER ROLE {} CREATEDB REPLICATION").format(sql.Identifier(user))
                )
                connection.execute(
                    sql.SQL("ALTER ROLE {} CREATEDB").format(sql.Identifier(DB_OWNER))
                )
                # Sessions act as the owner: objects created by migrations belong to it, whichever
                # login role ran them.
                connection.execute(
                    sql.SQL("ALTER ROLE {} SET role TO {}").format(
                        sql.Identifier(user), sql.Identifier(DB_OWNER)
                    )
                )
                verifier = connection.pgconn.encrypt_password(
                    values.db_password.encode(), user.encode(), b"scram-sha-256"
                ).decode()
                connection.execute(
                    sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(user), sql.Literal(verifier)
                    )
                )
            self._secrets.mkdir(parents=True, exist_ok=True)
            self._secrets.chmod(0o700)
            files = {
                self.db_user_file: user,
                self.db_password_file: values.db_password,
                self.token_secret_file: values.token_secret,
                self.token_secret_previous_file: values.token_secret_previous,
            }
            if values.webhook_token:
                files[self.webhook_token_file] = values.webhook_token
            changed = [
                path.name
                for path, text in files.items()
                if write_atomic(path, text + "\n" if text else "", mode=0o600)
            ]
            changed += self._install_engine_config(values.backup_cipher_pass)
        say(
            f"secrets installed for {self.environment} (login role {user}"
            + (f"; changed: {', '.join(changed)})" if changed else "; unchanged)")
        )
        return f"0600 files under {self._secrets}"

    def standing_secrets(self, progress: Progress | None = None) -> str | None:
        """None: the files hold what was installed last, so a deploy installs Vault's values."""
        return None

    def database_login(self) -> str:
        """The login role new replicas and tools use (from the secrets installed last)."""
        if self.db_user_file.exists():
            return read_secret(self.db_user_file)
        return DB_LOGIN_ROLES[0]

    def revoke_database_logins(self, progress: Progress | None = None) -> list[str]:
        """Every login of the database but the current one loses its password and its sessions."""
        say = progress or _quiet
        from psycopg import sql

        keep = self.database_login()
        revoked = []
        with self.store.locked():
            connection = self._superuser_connection(wait=10)
            with connection:
                rows = connection.execute(
                    "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) AND rolcanlogin",
                    ([DB_OWNER, *DB_LOGIN_ROLES],),
                ).fetchall()
                for (name,) in rows:
                    if name == keep:
                        continue
                    connection.execute(
                        sql.SQL("ALTER ROLE {} NOLOGIN PASSWORD NULL").format(sql.Identifier(name))
                    )
                    connection.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                        (name,),
                    )
                    revoked.append(name)
        say(f"revoked database logins: {', '.join(revoked) or 'none'} (current: {keep})")
        return revoked

    def restart_replicas(self, progress: Progress | None = None) -> None:
        """Replace every replica by a fresh one of the same build (they read their secrets at
        start), one at a time like a deploy: no failed request."""
        say = progress or _quiet
        with self.store.locked():
            self._require_running()
            tracks: tuple[tuple[Track, int], ...] = (
                ("stable", self.settings.api_replicas),
                ("canary", self.settings.canary_replicas),
            )
            for track, count in tracks:
                build = self.store.load().track(track).build
                if build is not None:
                    say(f"restarting the {track} replicas of {build.version}")
                    self._roll(track, build.to_build(), count, say, fresh=True)

    def database_env(self) -> dict[str, str]:
        """SOCIALNET_DB_* for migrations and tools (the password stays in its file)."""
        state = self.store.load()
        if "postgres" not in state.ports:
            raise PlatformError(f"local platform {self.environment} was never started")
        return {
            "SOCIALNET_DB_HOST": "127.0.0.1",
            "SOCIALNET_DB_PORT": str(state.ports["postgres"]),
            "SOCIALNET_DB_NAME": DB_NAME,
            "SOCIALNET_DB_USER": self.database_login(),
            "SOCIALNET_DB_PASSWORD_FILE": str(self.db_password_file),
            "SOCIALNET_DB_OWNER": DB_OWNER,
        }

    def _wal_archiving(self) -> list[str]:
        """`-c` settings archiving WAL through pgBackRest (PITR), if the environment backs up.

        Until the repository exists (the first base backup creates the stanza in the bucket
        Terraform made) PostgreSQL keeps its WAL and retries, and `status` shows archiving as
        failing.
        """
        if self._environment_model.backup is None:
            return []
        settings = archiving_settings(
            str(self._pgbackrest_config), self.environment, pgbackrest_binary()
        )
        return [item for setting in settings for item in ("-c", setting)]

    @property
    def _s3_tls_pem(self) -> Path:
        return self.state_dir / "haproxy" / "s3-tls.pem"

    def _engine_setup(self) -> EngineSetup | None:
        """pgBackRest's view of this environment: the cluster, the policy's bucket and copy
        bucket through the edge's TLS front of the AWS emulator."""
        policy = self._environment_model.backup
        if policy is None:
            return None
        ports = self.store.load().ports
        region = self._environment_model.cloud.region
        buckets = [policy.bucket] + (
            [policy.physical.copy_bucket] if policy.physical.copy_bucket else []
        )
        folder = self._pgbackrest_config.parent
        return EngineSetup(
            stanza=self.environment,
            data_dir=str(self._pgdata),
            port=ports["postgres"],
            socket_dir=str(self._pgsocket),
            repositories=tuple(
                Repository(
                    index=index,
                    bucket=bucket,
                    region=region,
                    host="127.0.0.1",
                    port=ports["s3tls"],
                    verify_tls=False,
                    uri_style="path",
                )
                for index, bucket in enumerate(buckets, start=1)
            ),
            process_max=policy.physical.process_max,
            compress=policy.physical.compress,
            spool_path=str(folder / "spool"),
            lock_path=str(folder / "lock"),
            log_path=str(folder / "log"),
        )

    def backup_engine(self) -> EngineAccess | None:
        setup = self._engine_setup()
        if setup is None:
            return None
        return EngineAccess(
            stanza=setup.stanza,
            config_path=str(self._pgbackrest_config),
            system_user=PG_SYSTEM_USER,
            repositories=tuple(repo.index for repo in setup.repositories),
        )

    def _install_engine_config(self, cipher_pass: str | None) -> list[str]:
        setup = self._engine_setup()
        if setup is None or not cipher_pass:
            return []
        # The emulator takes any key; a real endpoint's keys would come from the environment.
        text = render_config(setup, cipher_pass, "socialnet-local", "socialnet-local")
        changed = install_config(setup, self._pgbackrest_config, text, PG_SYSTEM_USER)
        return [self._pgbackrest_config.name] if changed else []

    # --- waiting -------------------------------------------------------------------------------

    def _wait_base_programs(self, state: PlatformState, say: Progress) -> None:
        ports = {
            "postgres": "postgres",
            "haproxy": "edge",
            "prometheus": "prometheus",
            "moto": "moto",
            "openbao": "openbao",
            "front": "front",
            "pushgateway": "pushgateway",
            "s3tls": "s3tls",
        }
        if (self._programs_dir / "registry.conf").exists():
            ports["registry"] = "registry"
        pending = dict(ports)
        deadline = time.monotonic() + START_TIMEOUT
        while pending:
            infos = self.supervisor.processes()
            for name, key in list(pending.items()):
                info = infos.get(name)
                if info and info["statename"] in {"FATAL", "EXITED"}:
                    raise PlatformError(
                        f"program {name} failed to start ({info['statename']}: "
                        f"{info.get('spawnerr') or info.get('description')}); its log "
                        f"{self._logs / (name + '.log')}:\n{tail(self._logs / (name + '.log'))}"
                    )
                if info and info["statename"] == "RUNNING" and port_answers(state.ports[key]):
                    del pending[name]
            if not pending:
                break
            if time.monotonic() > deadline:
                names = ", ".join(f"{n} (port {state.ports[k]})" for n, k in pending.items())
                raise PlatformError(f"not listening within {START_TIMEOUT:.0f} s: {names}")
            time.sleep(0.2)
        say(f"{', '.join(ports)} are up")

    def _wait_replica_ready(self, replica: Replica) -> None:
        url = f"http://127.0.0.1:{replica.port}/readyz"
        deadline = time.monotonic() + self.settings.ready_timeout
        last = "no answer"
        log = self._logs / f"{replica.program}.log"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                info = self.supervisor.process(replica.program)
                if info and info["statename"] == "FATAL":
                    last = f"the process keeps exiting ({info.get('spawnerr') or 'see its log'})"
                    break
                try:
                    response = client.get(url)
                    if response.status_code == 200:
                        return
                    last = f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as error:
                    last = type(error).__name__
                time.sleep(0.25)
        raise ReplicaNotReadyError(
            f"replica {replica.program} ({replica.version}, port {replica.port}) not ready within "
            f"{self.settings.ready_timeout:.0f} s: /readyz: {last}; log {log}:\n{tail(log)}"
        )

    # --- the edge ------------------------------------------------------------------------------

    def _apply_weights(self, state: PlatformState) -> None:
        stable = [r for r in state.stable.replicas if r.enabled]
        canary = [r for r in state.canary.replicas if r.enabled]
        stable_weight, canary_weight = track_weights(
            self._user_weight(state.canary_weight), len(stable), len(canary)
        )
        for replica in stable:
            self.haproxy.set_weight(replica.slot, stable_weight)
        for replica in canary:
            self.haproxy.set_weight(replica.slot, canary_weight)

    def _save_edge_state(self) -> None:
        self.haproxy.save_server_state(self.state_dir / "haproxy" / "servers.state")

    def _apply_edge(self, state: PlatformState) -> None:
        """Make HAProxy's runtime state match state.json (after a start or an HAProxy restart)."""
        deadline = time.monotonic() + 15
        while not self.haproxy.answers():
            if time.monotonic() > deadline:
                raise PlatformError(
                    f"HAProxy runtime socket {self.haproxy.socket_path} not answering"
                )
            time.sleep(0.1)
        used = {replica.slot: replica for replica in state.replicas()}
        for slot in [*slot_names("stable"), *slot_names("canary")]:
            replica = used.get(slot)
            if replica is None or not replica.enabled:
                self.haproxy.set_state(slot, "maint")
            else:
                self.haproxy.point(slot, replica.port)
        self._apply_weights(state)
        for replica in state.replicas():
            if replica.enabled:
                self.haproxy.set_state(replica.slot, "ready")
        canary = state.canary.build
        self._apply_traffic(canary.version if canary else None, state.canary_weight)
        self._save_edge_state()

    # --- canary traffic (release.traffic) --------------------------------------------------------

    def _user_weight(self, weight: int) -> int:
        return 0 if self._environment_model.release.traffic.mode == "ab" else weight

    def _traffic_rules(self, canary_version: str | None, weight: int) -> TrafficRules:
        traffic = self._environment_model.release.traffic
        pins: list[tuple[str, str]] = []
        if traffic.sticky and canary_version is not None:
            # Pins name the canary: a pin left by an earlier canary matches nothing.
            token = re.sub(r"[^A-Za-z0-9._-]", "_", canary_version)
            pins.append(("canary", f"canary-{token}"))
            # Stable pins only once the canary has a share: at 0 % every user would be pinned
            # to stable and the canary would never get any.
            if weight > 0:
                pins.append(("stable", f"stable-{token}"))
        return TrafficRules(
            header_values=(traffic.header_value,) if traffic.header else (),
            cookie_always=traffic.cookie is not None,
            cookie_never=traffic.cookie is not None,
            pins=tuple(pins),
        )

    def _apply_traffic(self, canary_version: str | None, weight: int) -> None:
        rules = self._traffic_rules(canary_version, weight)
        for name, lines in rules.files().items():
            self.haproxy.replace_patterns(self.state_dir / "haproxy" / name, lines)

    def _traffic_summary(self) -> str:
        traffic = self._environment_model.release.traffic
        ways = [f"header {traffic.header}: {traffic.header_value}"] if traffic.header else []
        ways += [f"cookie {traffic.cookie}=always"] if traffic.cookie else []
        ways += ["sticky"] if traffic.sticky else []
        if traffic.mode == "ab":
            ways.append("ab: no weighted users")
        return f"; routed by {', '.join(ways)}" if ways else ""

    def _check_edge_names(self) -> None:
        """The header and cookie names are in haproxy.cfg (HAProxy cannot take them at run time):
        a policy naming others needs the config rendered again, which restarts HAProxy."""
        haproxy_cfg = self.state_dir / "haproxy" / "haproxy.cfg"
        if haproxy_cfg.read_text() != self._haproxy_cfg(self.store.load()):
            traffic = self._environment_model.release.traffic
            raise PlatformError(
                f"environment {self.environment}: the running edge's {haproxy_cfg} is not the one "
                f"release.traffic (header {traffic.header or DEFAULT_CANARY_HEADER}, cookie "
                f"{traffic.cookie or DEFAULT_CANARY_COOKIE}) needs; run "
                f"`socialnet-ops up --env {self.environment}` (restarts HAProxy) first"
            )

    def _wait_edge_up(self, replica: Replica) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout
        status = "unknown"
        while time.monotonic() < deadline:
            status = self.haproxy.stats()[replica.slot].status
            # DRAIN is how HAProxy shows a healthy server at weight 0 (a canary at 0 %).
            if status in {"UP", "DRAIN"}:
                return
            time.sleep(0.1)
        raise ReplicaNotReadyError(
            f"replica {replica.program} (port {replica.port}) is {status} in HAProxy slot "
            f"api/{replica.slot} after {self.settings.ready_timeout:.0f} s"
        )

    def _write_targets(self, state: PlatformState) -> None:
        targets = [
            {
                "targets": [f"127.0.0.1:{replica.port}"],
                "labels": {
                    "track": replica.track,
                    "version": replica.version,
                    "program": replica.program,
                },
            }
            for replica in state.replicas()
        ]
        write_atomic(self._targets_file, json.dumps(targets, indent=2) + "\n")

    # --- replicas ------------------------------------------------------------------------------

    def _replica_env(self, build: Build, track: Track, state: PlatformState) -> dict[str, str]:
        return {
            "SOCIALNET_DB_HOST": "127.0.0.1",
            "SOCIALNET_DB_PORT": str(state.ports["postgres"]),
            "SOCIALNET_DB_NAME": DB_NAME,
            "SOCIALNET_DB_USER": self.database_login(),
            "SOCIALNET_DB_PASSWORD_FILE": str(self.db_password_file),
            "SOCIALNET_TOKEN_SECRET_FILE": str(self.token_secret_file),
            # Empty outside a rotation overlap: the API then accepts only the current key.
            "SOCIALNET_TOKEN_SECRET_PREVIOUS_FILE": str(self.token_secret_previous_file),
            "SOCIALNET_VERSION": build.version,
            "SOCIALNET_GIT_SHA": build.git_sha,
            "SOCIALNET_TRACK": track,
            # The build's own settings last: a drill may point it at a broken database on purpose.
            **build.runtime_env,
        }

    def _start_replica(self, state: PlatformState, track: Track, build: Build) -> Replica:
        used_names = {replica.program for replica in state.replicas()}
        index = 1
        while program_name(track, build.version, index) in used_names:
            index += 1
        used_slots = {replica.slot for replica in state.replicas()}
        free_slots = [slot for slot in slot_names(track) if slot not in used_slots]
        if not free_slots:
            raise PlatformError(f"no free HAProxy slot left for the {track} track")
        replica = Replica(
            program=program_name(track, build.version, index),
            port=free_port(state.taken_ports()),
            slot=free_slots[0],
            track=track,
            version=build.version,
        )
        spec = self.runtime.api_program(
            build,
            replica.program,
            replica.port,
            self._replica_env(build, track, state),
            self.settings.drain_timeout,
        )
        conf = self._spec_program(
            replica.program, spec, priority=50, stopwaitsecs=int(self.settings.drain_timeout) + 10
        )
        state.track(track).replicas.append(replica)
        state.log_offsets[replica.program] = self._log_size()
        self.store.save(state)
        write_atomic(self._programs_dir / f"{replica.program}.conf", conf, mode=0o600)
        self.supervisor.update()
        self._write_targets(state)
        return replica

    def _enable_replica(self, state: PlatformState, replica: Replica) -> None:
        self.haproxy.point(replica.slot, replica.port)
        replica.enabled = True
        self._apply_weights(state)
        self.haproxy.set_state(replica.slot, "ready")
        self.store.save(state)
        self._wait_edge_up(replica)
        self._save_edge_state()

    def _remove_replica(self, state: PlatformState, replica: Replica, say: Progress) -> None:
        """Drain the replica out of HAProxy, then stop and forget its program."""
        if replica.enabled:
            replica.enabled = False
            self._apply_weights(state)
            self.haproxy.set_state(replica.slot, "drain")
            self._wait_drained(replica)
        self.haproxy.set_state(replica.slot, "maint")
        say(f"stopping {replica.program}")
        self.supervisor.remove(replica.program)
        self.runtime.remove(replica.program)
        with contextlib.suppress(FileNotFoundError):
            (self._programs_dir / f"{replica.program}.conf").unlink()
        self.supervisor.update()
        track = state.track(replica.track)
        track.replicas = [r for r in track.replicas if r.program != replica.program]
        state.log_offsets.pop(replica.program, None)
        self.store.save(state)
        self._write_targets(state)
        self._save_edge_state()

    def _wait_drained(self, replica: Replica) -> None:
        deadline = time.monotonic() + self.settings.drain_timeout
        while time.monotonic() < deadline:
            if self.haproxy.sessions(replica.slot) == 0:
                return
            time.sleep(0.1)

    def _roll(
        self, track: Track, build: Build, count: int, say: Progress, fresh: bool = False
    ) -> None:
        """Bring `track` to `count` ready replicas of `build`, then retire every other replica.

        New replicas join the rotation one at a time once ready; the old ones leave (drained, one
        at a time) only when all new ones serve, so a replica that never gets ready leaves the old
        set untouched and the new ones are removed.
        """
        if not build.images and (build.path is None or not (build.path / "app").is_dir()):
            raise PlatformError(f"build {build.version}: {build.path} holds no app/ folder")
        self.runtime.require_images(build)
        state = self.store.load()
        infos = self.supervisor.processes()
        keep = [
            r
            for r in state.track(track).replicas
            if not fresh
            and r.version == build.version
            and r.enabled
            and infos.get(r.program, {}).get("statename") == "RUNNING"
        ][:count]
        new: list[Replica] = []
        pending: list[Replica] = []
        remaining = count - len(keep)
        try:
            # A replica spends seconds importing: keep SURGE of them starting while the previous
            # ones join the rotation one at a time (more would only fight for the CPU).
            while remaining or pending:
                while remaining and len(pending) < SURGE:
                    replica = self._start_replica(state, track, build)
                    new.append(replica)
                    pending.append(replica)
                    remaining -= 1
                    say(f"started {replica.program} on port {replica.port}")
                replica = pending.pop(0)
                self._wait_replica_ready(replica)
                self._enable_replica(state, replica)
                say(f"{replica.program} serves in slot api/{replica.slot}")
        except BaseException:
            for replica in new:
                with contextlib.suppress(PlatformError):
                    self._remove_replica(state, replica, say)
            raise
        staying = {r.program for r in [*keep, *new]}
        for replica in list(state.track(track).replicas):
            if replica.program not in staying:
                say(f"draining {replica.program}")
                self._remove_replica(state, replica, say)
        state.track(track).build = BuildRecord.of(build)
        self.store.save(state)

    def _require_running(self) -> None:
        if not self.supervisor.is_running():
            raise PlatformError(
                f"local platform {self.environment} is not running; start it first "
                "(`socialnet-ops up` or LocalPlatform.start())"
            )

    # --- the Platform protocol -----------------------------------------------------------------

    def deploy(self, build: Build, progress: Progress | None = None) -> None:
        say = progress or _quiet
        with self.store.locked():
            self._require_running()
            say(
                f"deploying {build.version} to the stable track ({self.settings.api_replicas} replicas)"
            )
            self._roll("stable", build, self.settings.api_replicas, say)
            self._update_front(build, say)
            say(f"stable track runs {build.version}")

    def rollback(self, build: Build, progress: Progress | None = None) -> None:
        self.deploy(build, progress)

    def image_registry(self) -> str | None:
        """Where builds push their images: this platform's registry; None runs processes."""
        ports = self.store.load().ports
        if self.runtime.problem() is not None or "registry" not in ports:
            return None  # no engine, or never started: the build carries no images
        return f"127.0.0.1:{ports['registry']}"

    def rendered_digest(self) -> str | None:
        return None  # nothing is rendered: the programs run the build's own files

    def start_canary(self, build: Build, progress: Progress | None = None) -> None:
        say = progress or _quiet
        with self.store.locked():
            self._require_running()
            self._check_edge_names()
            state = self.store.load()
            current = state.canary.build
            if current is not None and current.version != build.version:
                say(f"replacing canary {current.version} by {build.version}")
                self._empty_canary(say)
            elif current is None and state.canary.replicas:
                self._empty_canary(say)  # leftovers of an interrupted start
            state = self.store.load()
            if state.canary.build is None:
                state.canary_weight = 0
                self.store.save(state)
            # Header and cookie routing on before the first replica joins: testers reach it at 0 %.
            self._apply_traffic(build.version, state.canary_weight)
            say(
                f"starting canary {build.version} ({self.settings.canary_replicas} replicas, weight 0)"
                + self._traffic_summary()
            )
            self._roll("canary", build, self.settings.canary_replicas, say)

    def set_canary_weight(self, weight: int) -> None:
        if not 0 <= weight <= 100:
            raise PlatformError(f"canary weight {weight} is not a percentage (0..100)")
        with self.store.locked():
            self._require_running()
            state = self.store.load()
            if weight > 0 and not any(r.enabled for r in state.canary.replicas):
                raise PlatformError(
                    "no canary is running: start_canary() before setting its weight"
                )
            # mode ab: the steps judge the canary on header/cookie requests; users get no share.
            state.canary_weight = self._user_weight(weight)
            self.store.save(state)
            self._apply_weights(state)
            if state.canary.build is not None:
                self._apply_traffic(state.canary.build.version, state.canary_weight)
            self._save_edge_state()

    def promote_canary(self, progress: Progress | None = None) -> None:
        say = progress or _quiet
        with self.store.locked():
            self._require_running()
            state = self.store.load()
            if state.canary.build is None:
                say("no canary to promote")
                return
            build = state.canary.build.to_build()
            say(f"promoting canary {build.version} to stable")
            self._roll("stable", build, self.settings.api_replicas, say)
            self._update_front(build, say)
            self._empty_canary(say)
            say(f"stable track runs {build.version}; canary track empty")

    def abort_canary(self, progress: Progress | None = None) -> None:
        say = progress or _quiet
        with self.store.locked():
            self._require_running()
            self._empty_canary(say)

    def track_urls(self, track: Literal["stable", "canary"]) -> list[str]:
        state = self.store.load()
        replicas = (state.stable if track == "stable" else state.canary).replicas
        return [f"http://127.0.0.1:{replica.port}" for replica in replicas]

    def _empty_canary(self, say: Progress) -> None:
        state = self.store.load()
        state.canary_weight = 0
        self.store.save(state)
        self._apply_weights(state)
        # Pins go back to the weighted split now; header and cookie requests once the canary's
        # replicas are drained (the edge routes them to a canary only while one serves).
        self._apply_traffic(None, 0)
        for replica in list(state.canary.replicas):
            self._remove_replica(state, replica, say)
        state.canary = TrackState()
        state.canary_record = state.canary_request = None  # the canary ended: nothing in flight
        self.store.save(state)
        self._save_edge_state()

    def canary_record(self) -> CanaryRecord | None:
        return self.store.load().canary_record

    def save_canary_record(self, record: CanaryRecord | None) -> None:
        self._update_state(canary_record=record)

    def canary_request(self) -> ControlRequest | None:
        return self.store.load().canary_request

    def request_canary(self, request: ControlRequest | None) -> None:
        self._update_state(canary_request=request)

    def _update_state(self, **fields: Any) -> None:
        """Set fields of the stored state under its lock (another run may write it too)."""
        with self.store.locked():
            state = self.store.load()
            for name, value in fields.items():
                setattr(state, name, value)
            self.store.save(state)

    # --- observation ---------------------------------------------------------------------------

    def endpoints(self) -> Endpoints:
        ports = self.store.load().ports
        if "edge" not in ports:
            raise PlatformError(f"local platform {self.environment} was never started")
        return Endpoints(
            edge_url=f"http://127.0.0.1:{ports['edge']}",
            prometheus_url=f"http://127.0.0.1:{ports['prometheus']}",
            database_host="127.0.0.1",
            database_port=ports["postgres"],
            extra={
                "front_url": f"http://127.0.0.1:{ports['front']}",
                "haproxy_exporter_url": f"http://127.0.0.1:{ports['exporter']}/metrics",
                "haproxy_socket": str(self.haproxy.socket_path),
                "aws_endpoint_url": f"http://127.0.0.1:{ports['moto']}",
                "s3_tls_endpoint": f"https://127.0.0.1:{ports['s3tls']}",
                "pushgateway_url": f"http://127.0.0.1:{ports['pushgateway']}",
                "vault_address": f"http://127.0.0.1:{ports['openbao']}",
                "vault_token_file": str(self.vault_token_file),
                "db_password_file": str(self.db_password_file),
                "supervisor_socket": str(self.supervisor.socket_path),
                "state_dir": str(self.state_dir),
            },
        )

    def status(self) -> PlatformStatus:
        state = self.store.load()
        running = self.supervisor.is_running()
        infos: dict[str, dict[str, Any]] = self.supervisor.processes() if running else {}
        edge: dict[str, Any] = {}
        if running:
            with contextlib.suppress(PlatformError):
                edge = dict(self.haproxy.stats())
        restarts = unexpected_exits(self._logs / "supervisord.log", state.log_offsets)
        replicas = {replica.program: replica for replica in state.replicas()}
        names = list(dict.fromkeys([*infos, *state.log_offsets]))
        programs = []
        for name in names:
            info = infos.get(name, {})
            details = []
            if info.get("description"):
                details.append(str(info["description"]))
            if info.get("spawnerr"):
                details.append(f"spawn error: {info['spawnerr']}")
            replica = replicas.get(name)
            if replica is not None:
                stat = edge.get(replica.slot)
                slot = (
                    f"api/{replica.slot} {stat.status} weight {stat.weight}"
                    if stat
                    else replica.slot
                )
                details.append(f"{replica.track} {replica.version} port {replica.port}, {slot}")
            programs.append(
                ProgramStatus(
                    name=name,
                    state=str(info.get("statename", "STOPPED")),
                    detail="; ".join(details),
                    restarts=restarts.get(name, 0),
                )
            )
        return PlatformStatus(
            environment=self.environment,
            running=running,
            stable_version=state.stable.build.version if state.stable.build else None,
            canary_version=state.canary.build.version if state.canary.build else None,
            canary_weight=state.canary_weight,
            programs=programs,
            endpoints=self.endpoints() if state.ports else None,
            runtime=self.runtime.describe(),
            images=dict(state.stable.build.images) if state.stable.build else {},
        )
