"""Recovery into a scratch cluster: pgBackRest restores (delta when the folder holds an earlier
restore) and writes the recovery settings; a server started there replays the archived WAL to the
target (a time, a named restore point, or the latest), is promoted, and keeps running.

Also the recovery markers: what a database holds at one instant (row counts and a checksum per
table, read while writes are held off), recorded on the live database and compared on a restored
one by the point-in-time drill.

PostgreSQL refuses to run as root: when we are root, the restored server runs as `postgres`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from socialnet_ops.adapters.backup_records import find_restore_point
from socialnet_ops.adapters.pgbackrest import PgBackRest
from socialnet_ops.adapters.postgres import USER_TABLES, BackupToolError, RunLog, tool_path
from socialnet_ops.adapters.process import ToolError, stream
from socialnet_ops.core.backups import (
    BackupError,
    BackupTarget,
    EngineAccess,
    OutsideRecoveryWindowError,
)
from socialnet_ops.core.physical_backups import (
    RecoveryMarker,
    RecoveryTargetKind,
    backup_before,
    describe_target,
)

_SERVER_USERS = ("postgres", "nobody")


def _server_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root; when we are root it runs as this user."""
    if os.geteuid() != 0:
        return None
    for name in _SERVER_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise BackupToolError("running as root and no `postgres` user to run the restored server as")


def _as_server_user(command: list[str]) -> list[str]:
    user = _server_user()
    if user is None:
        return command
    return [
        "setpriv",
        f"--reuid={user.pw_uid}",
        f"--regid={user.pw_gid}",
        "--init-groups",
        "--",
        *command,
    ]


def _log_tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _chown_tree(root: Path, user: pwd.struct_passwd) -> None:
    os.chown(root, user.pw_uid, user.pw_gid)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(folder, name), user.pw_uid, user.pw_gid, follow_symlinks=False)


def _server_log_lines(path: Path) -> list[str]:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace").splitlines()
    return []


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet: what mkdir(parents=True) makes."""
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def stop_command(data_dir: Path) -> str:
    """The shell command that stops a restored server, as a person on this machine runs it."""
    command = [tool_path("pg_ctl"), "-D", str(data_dir), "stop"]
    user = _server_user()
    if user is not None:
        # The server runs as its own user and pg_ctl refuses to run as root.
        command = ["runuser", "-u", user.pw_name, "--", *command]
    return shlex.join(command)


def stop_restored_server(data_dir: Path, on_line: Callable[[str], None] | None = None) -> None:
    """Fast shutdown of a restored server; nothing when none runs there."""
    command = _as_server_user(
        [tool_path("pg_ctl"), "stop", "-D", str(data_dir), "-m", "fast", "-w"]
    )
    with contextlib.suppress(ToolError):
        stream(command, on_line or (lambda _line: None))


def engine_of(target: BackupTarget) -> EngineAccess:
    if target.engine is None:
        raise BackupError(
            f"environment {target.environment}: no physical backup engine here (pgBackRest runs "
            "next to the data directory, which only the local platform's flows reach)"
        )
    return target.engine


def _check_recoverable(
    target: BackupTarget, engine: PgBackRest, kind: RecoveryTargetKind, value: str | None
) -> tuple[str | None, str]:
    """Refuse a target no backup can reach before anything is created; the backup to start from
    (None: pgBackRest's choice, the newest)."""
    catalog = engine.catalog()
    backups = catalog.in_repository(1)
    if not backups:
        raise OutsideRecoveryWindowError(
            f"stanza {catalog.stanza} has no backup in its repository ({catalog.status}): take a "
            "base backup first"
        )
    if kind == "latest":
        return None, f"newest backup {backups[-1].label}"
    if kind == "name":
        point = find_restore_point(target.store, target.environment, str(value))
        start = backup_before(backups, point.created_at) if point else backups[0]
        if start is None:
            raise OutsideRecoveryWindowError(
                f"restore point {value} was made before the oldest backup's end: nothing can be "
                "recovered to it"
            )
        return start.label, f"backup {start.label}"
    when = datetime.fromisoformat(str(value))
    if when.tzinfo is None:
        raise BackupError(f"recovery target time {value} has no time zone; give one (e.g. +00:00)")
    if when > datetime.now(UTC):
        raise OutsideRecoveryWindowError(f"recovery target time {value} is in the future")
    start = backup_before(backups, when)
    if start is None:
        raise OutsideRecoveryWindowError(
            f"recovery target time {value} is before the oldest backup's end "
            f"({backups[0].stopped_at.isoformat()}): nothing can be recovered to it"
        )
    return start.label, f"backup {start.label}"


def recover(
    target: BackupTarget,
    kind: RecoveryTargetKind,
    value: str | None,
    restore_dir: Path | None,
    port: int,
    *,
    log: RunLog,
) -> dict[str, Any]:
    """The cluster as it was at the target, restored by pgBackRest and promoted on 127.0.0.1.

    A `restore_dir` whose data folder holds an earlier restore is overwritten by a delta restore
    (only changed files are fetched). Without `restore_dir` the data goes into a new
    `socialnet-pitr-<env>-*` folder of the temporary directory. A failed restore leaves nothing
    behind that it created; the result's `stop_with` stops the server.
    """
    engine = PgBackRest(engine_of(target), log)
    label, source = _check_recoverable(target, engine, kind, value)
    created: Path | None  # the outermost folder this run made, removed again if it fails
    if restore_dir is None:
        restore_dir = Path(tempfile.mkdtemp(prefix=f"socialnet-pitr-{target.environment}-"))
        created = restore_dir
    else:
        created = _first_missing(restore_dir)
        restore_dir.mkdir(parents=True, exist_ok=True)
    data_dir = restore_dir / "data"
    if (data_dir / "postmaster.pid").exists():
        raise BackupError(
            f"{data_dir} has a running server: stop it first ({stop_command(data_dir)})"
        )
    delta = (data_dir / "PG_VERSION").exists()
    log.info(
        "restoring %s to %s from %s into %s%s",
        target.environment, describe_target(kind, value), source, data_dir,
        " (delta: only changed files)" if delta else "",
    )  # fmt: skip
    try:
        if created is not None:
            restore_dir.chmod(0o755)  # ours: the server's user must traverse it
        data_dir.mkdir(exist_ok=True)
        data_dir.chmod(0o700)
        user = _server_user()
        if user is not None:
            _chown_tree(data_dir, user)
        started = time.monotonic()
        engine.restore(data_dir, kind, value, delta=delta, backup_label=label)
        restored_s = time.monotonic() - started
        result = _start_and_wait(target, data_dir, port, log)
    except BaseException:
        if (data_dir / "postmaster.pid").exists():
            stop_restored_server(data_dir, lambda line: log.info("pg_ctl: %s", line))
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        elif not delta:  # a data directory given empty stays, empty
            for child in data_dir.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise
    return {
        **result,
        "target_kind": kind,
        "target": value,
        "backup_label": label,
        "delta": delta,
        "restore_s": round(restored_s, 3),
        "recovery_s": round(time.monotonic() - started, 3),
    }


def _start_and_wait(target: BackupTarget, data_dir: Path, port: int, log: RunLog) -> dict[str, Any]:
    user = _server_user()
    log_file = (
        data_dir / "restore.log"
    )  # in the data directory: the only place that is the server's
    log_file.unlink(missing_ok=True)
    log_file.touch()
    if user is not None:
        os.chown(log_file, user.pw_uid, user.pw_gid)
    options = f"-p {port} -k {shlex.quote(str(data_dir))} -c listen_addresses=127.0.0.1"
    for name, value in _source_settings(data_dir).items():
        options += f" -c {name}={value}"
    command = _as_server_user(
        [
            tool_path("pg_ctl"), "start", "-D", str(data_dir), "-l", str(log_file),
            "-w", "-t", "600", "-o", options,
        ]
    )  # fmt: skip
    access = target.database.model_copy(update={"host": "127.0.0.1", "port": port})
    try:
        try:
            stream(command, lambda line: log.info("pg_ctl: %s", line))
        except ToolError as error:
            raise BackupToolError(
                f"the restored server did not start: {_fatal_line(log_file) or error.tail[-1:]}"
            ) from None
        deadline = time.monotonic() + 600
        while True:
            try:
                with psycopg.connect(**access.connect_kwargs(), autocommit=True) as connection:
                    if not connection.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
                        counts, checksums = read_content(connection)
                        break
            except psycopg.OperationalError as error:
                if not (data_dir / "postmaster.pid").exists():
                    raise BackupToolError(
                        f"the restored server stopped: {_fatal_line(log_file) or error}"
                    ) from None
            if time.monotonic() > deadline:
                raise BackupToolError(f"recovery did not finish within 600 s (see {log_file})")
            time.sleep(0.3)
    finally:
        # The server writes to its log file, not to us: its recovery is copied into the run's
        # logs, also when the data directory (and the file) is then removed.
        server_log = _server_log_lines(log_file)
        for line in server_log:
            log.info("restored server: %s", line)
    stop_line = next((line for line in server_log if "recovery stopping" in line), "")
    log.info("restored server promoted on port %d: %s", port, stop_line or "end of WAL")
    return {
        "recovery_stop": stop_line.split("LOG:", 1)[-1].strip(),
        "host": "127.0.0.1",
        "port": port,
        "data_dir": str(data_dir),
        "log": str(log_file),
        "stop_with": stop_command(data_dir),
        "database": access.database,
        "row_counts": counts,
        "table_checksums": checksums,
    }


# pg_controldata's names of the settings a recovering server must not set lower than its source.
_CONTROL_SETTINGS = {
    "max_connections setting": "max_connections",
    "max_worker_processes setting": "max_worker_processes",
    "max_wal_senders setting": "max_wal_senders",
    "max_prepared_xacts setting": "max_prepared_transactions",
    "max_locks_per_xact setting": "max_locks_per_transaction",
}


def _source_settings(data_dir: Path) -> dict[str, str]:
    """What the backed-up server ran with (pg_control of the restored data directory): a
    recovering server refuses to start with less ("insufficient parameter settings")."""
    lines: list[str] = []
    stream(_as_server_user([tool_path("pg_controldata"), str(data_dir)]), lines.append)
    settings = {}
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip() in _CONTROL_SETTINGS and value.strip().isdigit():
            settings[_CONTROL_SETTINGS[name.strip()]] = value.strip()
    return settings


def _fatal_line(log_file: Path) -> str:
    """The server's own reason (FATAL), e.g. a restore point that is not in the WAL."""
    for line in reversed(_server_log_lines(log_file)):
        if "FATAL:" in line:
            return line.split("FATAL:", 1)[1].strip()
    return ""


# --- what a database holds ------------------------------------------------------------------------


def read_content(
    connection: psycopg.Connection[Any],
) -> tuple[dict[str, int], dict[str, str]]:
    """Row count and an order-independent checksum (sum of row hashes) of every user table."""
    counts: dict[str, int] = {}
    checksums: dict[str, str] = {}
    for schema, table in connection.execute(USER_TABLES).fetchall():
        name = sql.Identifier(schema, table)
        row = connection.execute(
            sql.SQL(
                "SELECT count(*), coalesce(sum(hashtext(t::text)::numeric), 0) FROM {} AS t"
            ).format(name)
        ).fetchone()
        assert row is not None
        counts[f"{schema}.{table}"] = int(row[0])
        checksums[f"{schema}.{table}"] = str(row[1])
    return counts, checksums


def record_marker(target: BackupTarget, lock_timeout_s: float = 5.0) -> RecoveryMarker:
    """What the live database holds now, read with writes held off (SHARE locks), stamped with
    the server's clock while they are held; then a commit, so a recovery to that stamp can stop."""
    access = target.database
    try:
        connection = psycopg.connect(**access.connect_kwargs())
    except psycopg.OperationalError as error:
        raise BackupError(f"cannot connect to {access.describe()}: {error}".strip()) from None
    with connection:
        connection.execute(
            sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout_s * 1000)}ms"))
        )
        tables = connection.execute(USER_TABLES).fetchall()
        if tables:
            connection.execute(
                sql.SQL("LOCK TABLE {} IN SHARE MODE").format(
                    sql.SQL(", ").join(sql.Identifier(schema, table) for schema, table in tables)
                )
            )
        counts, checksums = read_content(connection)
        taken_at = connection.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        connection.commit()
        # A commit record stamped after `taken_at`: recovery to a time stops at the first commit
        # after it, and needs one to exist in the archived WAL.
        connection.execute("SELECT txid_current()")
        connection.commit()
        segment = connection.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]  # type: ignore[index]
    return RecoveryMarker(
        environment=target.environment,
        taken_at=taken_at,
        wal_segment=str(segment),
        row_counts=counts,
        table_checksums=checksums,
    )
