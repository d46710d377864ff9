"""pgBackRest, run for one environment's stanza: the physical backup engine's commands.

Every command runs as the system user that owns the data directory (pgBackRest, like PostgreSQL,
refuses to act on a cluster it does not own), reads the environment's pgbackrest.conf (0600, the
cipher passphrase inside), and logs into the run's log as it goes; pgBackRest itself redacts the
passphrase and keys from what it prints. A failure is one line: the command and pgBackRest's own
ERROR line.
"""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

from socialnet_ops.adapters.files import write_atomic
from socialnet_ops.adapters.postgres import BackupToolError, RunLog
from socialnet_ops.adapters.process import ToolError, stream
from socialnet_ops.core.backups import EngineAccess
from socialnet_ops.core.physical_backups import (
    BackupType,
    Catalog,
    EngineSetup,
    PhysicalBackup,
    RecoveryTargetKind,
    parse_catalog,
)


def pgbackrest_binary() -> str:
    found = shutil.which("pgbackrest")
    if found is None:
        raise BackupToolError("pgbackrest is not installed: apt-get install pgbackrest")
    return found


def as_user(user: str, command: list[str]) -> list[str]:
    """`command` run as `user` when we are root (setpriv execs in place: signals reach it)."""
    if os.geteuid() != 0:
        return command
    entry = pwd.getpwnam(user)
    return [
        "setpriv",
        f"--reuid={entry.pw_uid}",
        f"--regid={entry.pw_gid}",
        "--init-groups",
        "--",
        *command,
    ]


def install_config(setup: EngineSetup, config_path: Path, text: str, user: str) -> bool:
    """Write pgbackrest.conf (0600, owned by `user`) and the folders it names; True if changed."""
    owner = pwd.getpwnam(user) if os.geteuid() == 0 else None
    for folder in (
        config_path.parent,
        Path(setup.spool_path),
        Path(setup.lock_path),
        Path(setup.log_path),
    ):
        folder.mkdir(parents=True, exist_ok=True)
        if owner is not None:
            os.chown(folder, owner.pw_uid, owner.pw_gid)
    changed = write_atomic(config_path, text, mode=0o600)
    if owner is not None:
        os.chown(config_path, owner.pw_uid, owner.pw_gid)
    return changed


def _error_line(lines: list[str]) -> str:
    for line in reversed(lines):
        if "ERROR:" in line:
            return line.split("ERROR:", 1)[1].strip()
    return lines[-1].strip() if lines else "no output"


class PgBackRest:
    """The engine for one stanza."""

    def __init__(self, access: EngineAccess, log: RunLog) -> None:
        self.access = access
        self.log = log

    def _command(self, *args: str) -> list[str]:
        return as_user(
            self.access.system_user,
            [
                pgbackrest_binary(),
                f"--config={self.access.config_path}",
                f"--stanza={self.access.stanza}",
                *args,
            ],
        )

    def run(self, *args: str, quiet: bool = False) -> list[str]:
        """Run one command; its lines go to the run's log (`quiet`: kept, not logged)."""
        if not Path(self.access.config_path).exists():
            raise BackupToolError(
                f"{self.access.config_path} does not exist: the platform writes it when it "
                "installs the environment's secrets (the repository's cipher passphrase)"
            )
        command = args[-1] if not args[-1].startswith("-") else args[0]
        try:
            result = stream(
                self._command(*args),
                (lambda _line: None)
                if quiet
                else (lambda line: self.log.info("pgbackrest: %s", line)),
                cwd=Path("/"),
            )
        except ToolError as error:
            raise BackupToolError(
                f"pgbackrest {command} of stanza {self.access.stanza} failed: "
                f"{_error_line(error.tail)}"
            ) from None
        return result.lines

    def catalog(self) -> Catalog:
        return parse_catalog(
            "\n".join(self.run("--output=json", "info", quiet=True)), self.access.stanza
        )

    def ensure_stanza(self) -> None:
        """stanza-create is idempotent: it checks an existing stanza against the cluster."""
        self.run("stanza-create")

    def check(self) -> None:
        """Archiving works end to end: a WAL switch reaches every repository."""
        self.run("check")

    def backup(self, backup_type: BackupType, repository: int) -> PhysicalBackup:
        self.run(f"--repo={repository}", f"--type={backup_type}", "backup")
        newest = self.catalog().latest(repository)
        if newest is None:
            raise BackupToolError(
                f"pgbackrest backup of stanza {self.access.stanza} left no backup"
            )
        return newest

    def verify(self, repository: int) -> None:
        """Every file of every backup and the archive read back and checked."""
        self.run(f"--repo={repository}", "verify")

    def expire(self, label: str, repository: int) -> None:
        self.run(f"--repo={repository}", f"--set={label}", "expire")

    def restore(
        self,
        data_dir: Path,
        kind: RecoveryTargetKind,
        target: str | None,
        *,
        delta: bool,
        backup_label: str | None = None,
    ) -> list[str]:
        """Into `data_dir` (empty, or a cluster to overwrite with `delta`), recovery settings
        written: replay to `target`, then promote; archiving off (never into the repository)."""
        args = [f"--pg1-path={data_dir}", "--archive-mode=off"]
        if delta:
            args.append("--delta")
        if backup_label:
            args.append(f"--set={backup_label}")
        if kind == "latest":
            args.append("--type=default")
        else:
            args += [f"--type={kind}", f"--target={target}", "--target-action=promote"]
        return self.run(*args, "restore")


def read_cipher_pass(config_path: Path) -> str | None:
    """The passphrase a config holds (to re-seed a forgetful dev Vault with the same one)."""
    for line in config_path.read_text().splitlines():
        if line.startswith("repo1-cipher-pass="):
            return line.split("=", 1)[1]
    return None
