"""Point-in-time recovery: a base backup unpacked into a new data directory, the archived WAL
replayed up to the asked time by a server started there, which is then left running (promoted).

PostgreSQL refuses to run as root: when we are root, the restored server runs as `postgres`.
"""

from __future__ import annotations

import contextlib
import io
import os
import pwd
import shlex
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from socialnet_ops.adapters.pg_backups import list_manifests
from socialnet_ops.adapters.pg_streams import HashingStream, prefetch
from socialnet_ops.adapters.postgres import BackupToolError, RunLog, count_rows, tool_path
from socialnet_ops.adapters.process import ToolError, stream
from socialnet_ops.adapters.s3 import DOWNLOAD_CHUNK, list_objects, read_chunks
from socialnet_ops.core.backups import (
    ArchivedSegment,
    BackupError,
    BackupTarget,
    RecoveryPlan,
    VerificationError,
    plan_recovery,
    verification_problems,
    wal_command,
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


def restore_to_time(
    target: BackupTarget,
    when: datetime,
    restore_dir: Path | None,
    port: int,
    *,
    log: RunLog,
) -> dict[str, Any]:
    """Base backup before `when` into a new data directory, WAL replayed up to `when`, promoted.

    The request is checked against the base backups and the archived WAL before anything is
    created; without `restore_dir` the data goes into a new `socialnet-pitr-<env>-*` folder of
    the temporary directory. A failed restore leaves nothing behind: a server it started is
    stopped, what it created removed. The server keeps running on 127.0.0.1:`port` (archiving
    off, so it never writes into the environment's archive); the result's `stop_with` stops it.
    """
    bases = list_manifests(target, "base", log=log)
    archived = [
        ArchivedSegment(stored.key.rsplit("/", 1)[-1], stored.last_modified)
        for stored in list_objects(target.store, target.wal_prefix)
    ]
    plan = plan_recovery(when, bases, archived)
    if restore_dir is not None:
        given = restore_dir / "data"
        if given.exists() and any(given.iterdir()):
            raise BackupError(f"{given} is not empty; give a new directory for the restored server")
    log.info(
        "recovering to %s from base backup %s and %d WAL segments (%s..%s)",
        when.isoformat(), plan.base.id, len(plan.segments), plan.segments[0], plan.segments[-1],
    )  # fmt: skip
    created: Path | None  # the outermost folder this run made, removed again if it fails
    if restore_dir is None:
        restore_dir = Path(tempfile.mkdtemp(prefix=f"socialnet-pitr-{target.environment}-"))
        created = restore_dir
    else:
        created = _first_missing(restore_dir)
        restore_dir.mkdir(parents=True, exist_ok=True)
    data_dir = restore_dir / "data"
    try:
        if created is not None:
            restore_dir.chmod(0o755)  # ours: the server's user must traverse it
        data_dir.mkdir(exist_ok=True)
        data_dir.chmod(0o700)
        return _recover(target, plan, data_dir, port, log)
    except BaseException:
        if (data_dir / "postmaster.pid").exists():
            stop_restored_server(data_dir, lambda line: log.info("pg_ctl: %s", line))
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        else:  # a data directory given empty stays, empty
            for child in data_dir.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise


def _recover(
    target: BackupTarget,
    plan: RecoveryPlan,
    data_dir: Path,
    port: int,
    log: RunLog,
) -> dict[str, Any]:
    reader = HashingStream(prefetch(read_chunks(target.store, plan.base.key)))
    try:
        with tarfile.open(fileobj=io.BufferedReader(reader, DOWNLOAD_CHUNK), mode="r|") as archive:
            archive.extractall(data_dir, filter="tar")
        reader.drain()
    except tarfile.TarError as error:
        raise VerificationError(
            f"base backup {plan.base.id} is damaged: not a readable tar ({error})"
        ) from None
    problems = verification_problems(
        plan.base, size_bytes=reader.size, sha256=reader.digest.hexdigest(),
        schema_revision=None, row_counts={},
    )  # fmt: skip
    if problems:
        raise VerificationError(f"base backup {plan.base.id} is damaged: " + "; ".join(problems))
    (data_dir / "recovery.signal").touch()
    settings = {
        **plan.base.server_settings,
        "restore_command": wal_command("fetch", target.store, target.wal_prefix.rstrip("/")),
        "recovery_target_time": plan.target.astimezone(UTC).isoformat(),
        "recovery_target_action": "promote",
        "archive_mode": "off",
        "listen_addresses": "127.0.0.1",
    }
    with (data_dir / "postgresql.auto.conf").open("a") as conf:
        conf.write("\n# point-in-time recovery by socialnet-ops\n")
        for name, value in settings.items():
            conf.write(f"{name} = '{value.replace(chr(39), chr(39) * 2)}'\n")
    user = _server_user()
    log_file = (
        data_dir / "restore.log"
    )  # in the data directory: the only place that is the server's
    log_file.touch()
    if user is not None:
        _chown_tree(data_dir, user)
    options = f"-p {port} -k {shlex.quote(str(data_dir))}"
    command = _as_server_user(
        [
            tool_path("pg_ctl"),
            "start",
            "-D",
            str(data_dir),
            "-l",
            str(log_file),
            "-w",
            "-t",
            "600",
            "-o",
            options,
        ]
    )
    access = target.database.model_copy(update={"host": "127.0.0.1", "port": port})
    try:
        try:
            stream(command, lambda line: log.info("pg_ctl: %s", line))
        except ToolError as error:
            raise BackupToolError(
                f"the restored server did not start (pg_ctl exited with {error.returncode}: "
                f"{' | '.join(error.tail[-3:])}); the end of its log:\n{_log_tail(log_file)}"
            ) from None
        deadline = time.monotonic() + 600
        while True:
            try:
                with psycopg.connect(**access.connect_kwargs(), autocommit=True) as connection:
                    if not connection.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
                        counts = count_rows(connection)
                        break
            except psycopg.OperationalError as error:
                if not (data_dir / "postmaster.pid").exists():
                    raise BackupToolError(
                        f"the restored server stopped: {error}; the end of its log:\n"
                        + _log_tail(log_file)
                    ) from None
            if time.monotonic() > deadline:
                raise BackupToolError(
                    f"recovery did not finish within 600 s; the end of its log:\n{_log_tail(log_file)}"
                )
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
        "base_backup": plan.base.id,
        "target_time": plan.target.isoformat(),
        "wal_segments": len(plan.segments),
        "recovery_stop": stop_line.split("LOG:", 1)[-1].strip(),
        "host": "127.0.0.1",
        "port": port,
        "data_dir": str(data_dir),
        "log": str(log_file),
        "stop_with": stop_command(data_dir),
        "database": access.database,
        "row_counts": counts,
    }
