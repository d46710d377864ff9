"""Point-in-time recovery: a base backup, WAL archived by archive_command, a moment between two
writes; and a missing WAL segment named before anything is started."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from flows.backup import base_backup
from flows.restore import restore
from socialnet_ops.backups import BackupTarget, WalGapError
from tasks.postgres import stop_restored_server
from tests.integration.backup.conftest import Emulator, execute, fetch, target_for
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
    assert taken["archiving_problem"] is None
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
        archiving_server, "pitr", "SELECT id, note FROM events ORDER BY id", port=result["port"]
    )
    assert rows == [(1, "before")]
    assert "recovery stopping before commit" in result["recovery_stop"]
    assert result["row_counts"]["public.events"] == 1
    # The live server still has both writes: the restore ran beside it, on its own port.
    assert fetch(archiving_server, "pitr", "SELECT count(*) FROM events") == [(2,)]


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
