"""Point-in-time recovery: a base backup, WAL archived by archive_command, a moment between two
writes; the command the result prints stops the server; a refused or failed restore leaves no
folder behind; and a missing WAL segment named before anything is started."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from flows.backup import base_backup
from flows.restore import restore
from socialnet_ops.adapters.pg_recovery import stop_restored_server
from socialnet_ops.core.backups import BackupError, BackupTarget, VerificationError, WalGapError
from tests.integration.backup.conftest import (
    Emulator,
    execute,
    fetch,
    target_for,
    task_run_lines,
)
from tests.support.postgres import PostgresServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@dataclass
class History:
    target: BackupTarget
    between: datetime  # after 'before' was committed, before 'after' was
    middle_segment: str  # holds 'before'; neither the base backup's first nor the last one


def switch_and_wait(server: PostgresServer) -> str:
    """Close the current WAL segment and wait until archive_command has shipped it."""
    rows = fetch(server, "postgres", "SELECT pg_walfile_name(pg_switch_wal())")
    segment = str(rows[0][0])
    wait_for(
        lambda: (
            (
                fetch(server, "postgres", "SELECT last_archived_wal FROM pg_stat_archiver")[0][0]
                or ""
            )
            >= segment
        ),
        timeout_s=30,
    )
    return segment


@pytest.fixture(scope="module")
def history(prefect_server: None, archiving_server: PostgresServer, emulator: Emulator) -> History:
    server = archiving_server
    server.create_database("pitr")
    execute(server, "pitr", "CREATE TABLE events (id int PRIMARY KEY, note text)")
    target = target_for(server, "pitr", emulator)
    taken = base_backup(env="local", target=target)
    assert taken.archiving_problem is None
    execute(server, "pitr", "INSERT INTO events VALUES (1, 'before')")
    middle = switch_and_wait(server)
    time.sleep(1.2)  # S3 keeps archive times to the second
    between = fetch(server, "postgres", "SELECT clock_timestamp()")[0][0]
    time.sleep(1.2)
    execute(server, "pitr", "INSERT INTO events VALUES (2, 'after')")
    switch_and_wait(server)
    return History(target=target, between=between, middle_segment=middle)


@pytest.fixture
def restore_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = Path(f"/tmp/socialnet-pitr-test-{time.monotonic_ns()}")
    yield folder
    if (folder / "data").exists():
        stop_restored_server(folder / "data")
    shutil.rmtree(folder, ignore_errors=True)


def test_restore_to_a_moment_between_two_writes(
    history: History, archiving_server: PostgresServer, restore_dir: Path
) -> None:
    result = restore(
        env="local",
        point_in_time=history.between,
        restore_dir=str(restore_dir),
        target=history.target,
    )
    rows = fetch(
        archiving_server, "pitr", "SELECT id, note FROM events ORDER BY id", port=result.port
    )
    assert rows == [(1, "before")]
    assert "recovery stopping before commit" in result.recovery_stop
    assert result.row_counts["public.events"] == 1
    # The live server still has both writes: the restore ran beside it, on its own port.
    assert fetch(archiving_server, "pitr", "SELECT count(*) FROM events") == [(2,)]


@pytest.fixture
def private_tmpdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """$TMPDIR of this test alone (tempfile reads it again once its cached choice is cleared);
    in /tmp, not under pytest's 0700 folder: the restored server's user must traverse it."""
    folder = Path(tempfile.mkdtemp(prefix="socialnet-tmpdir-test-"))
    folder.chmod(0o755)
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", None)
    yield folder
    for data_dir in folder.glob("socialnet-pitr-*/data"):
        stop_restored_server(data_dir)
    shutil.rmtree(folder, ignore_errors=True)


def restore_folders(tmpdir: Path) -> list[Path]:
    return sorted(tmpdir.glob("socialnet-pitr-*"))


def test_the_printed_stop_command_stops_the_restored_server_and_pg_ctl_is_in_the_logs(
    history: History, archiving_server: PostgresServer, private_tmpdir: Path
) -> None:
    state = restore(
        env="local", point_in_time=history.between, target=history.target, return_state=True
    )
    result = state.result()
    data_dir = Path(result.data_dir)
    assert data_dir.parent in restore_folders(private_tmpdir)  # made by the task, not asked
    assert fetch(archiving_server, "pitr", "SELECT 1", port=result.port) == [(1,)]
    stopped = subprocess.run(
        shlex.split(result.stop_with), capture_output=True, text=True, timeout=60
    )
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not (data_dir / "postmaster.pid").exists()
    with pytest.raises(psycopg.OperationalError):
        fetch(archiving_server, "pitr", "SELECT 1", port=result.port)

    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None

    def logged() -> bool:
        lines = task_run_lines(flow_run_id, "restore-to-point-in-time")
        return "pg_ctl: server started" in lines and any(
            line.startswith("restored server: ") and "recovery stopping before commit" in line
            for line in lines
        )

    wait_for(logged, timeout_s=15, what="pg_ctl's and the server's lines in the run's logs")


def test_a_refused_restore_creates_no_folder(history: History, private_tmpdir: Path) -> None:
    with pytest.raises(BackupError, match="no base backup finished before 2000-01-01"):
        restore(
            env="local",
            point_in_time=datetime(2000, 1, 1, tzinfo=UTC),
            target=history.target,
        )
    assert restore_folders(private_tmpdir) == []


def test_a_restore_failing_after_it_made_its_folder_removes_it(
    history: History, archiving_server: PostgresServer, emulator: Emulator, private_tmpdir: Path
) -> None:
    """A damaged base backup is found once downloaded into the new folder: the folder goes."""
    server = archiving_server
    # A dry run of retention: the newer base backup must not prune the history's older one.
    taken = base_backup(env="local", target=history.target, retention_dry_run=True)
    execute(server, "pitr", "INSERT INTO events VALUES (3, 'after the damaged base backup')")
    switch_and_wait(server)
    time.sleep(1.2)  # S3 keeps archive times to the second
    moment = fetch(server, "postgres", "SELECT clock_timestamp()")[0][0]
    time.sleep(1.2)
    execute(server, "pitr", "INSERT INTO events VALUES (4, 'later')")
    switch_and_wait(server)
    s3 = emulator.client()
    key = f"basebackups/local/{taken.backup_id}.tar"
    body = s3.get_object(Bucket="socialnet-backups-local", Key=key)["Body"].read()
    middle = len(body) // 2
    flipped = bytes(byte ^ 0xFF for byte in body[middle : middle + 64])
    s3.put_object(
        Bucket="socialnet-backups-local",
        Key=key,
        Body=body[:middle] + flipped + body[middle + 64 :],
    )

    with pytest.raises(VerificationError, match=f"base backup {taken.backup_id} is damaged"):
        restore(env="local", point_in_time=moment, target=history.target)
    assert restore_folders(private_tmpdir) == []


def test_a_missing_wal_segment_is_named_and_nothing_is_started(
    history: History, emulator: Emulator, restore_dir: Path
) -> None:
    emulator.client().delete_object(
        Bucket="socialnet-backups-local", Key=f"wal/local/{history.middle_segment}"
    )
    with pytest.raises(WalGapError, match=f"WAL segment {history.middle_segment} is missing"):
        restore(
            env="local",
            point_in_time=history.between,
            restore_dir=str(restore_dir),
            target=history.target,
        )
    assert not (restore_dir / "data").exists()
