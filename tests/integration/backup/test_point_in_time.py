"""Physical backups and point-in-time recovery on pgBackRest, against a real PostgreSQL archiving
its WAL through pgBackRest into the AWS emulator's buckets (behind HAProxy's TLS), encrypted and
copied into a second bucket: full then incremental backups, each verified; recovery to a moment
between two writes, to a named restore point and to the latest; a delta restore over an earlier
one; the point-in-time drill proving a recorded marker and failing on a wrong one; refused
recoveries that leave nothing behind."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest

from flows.backup import backup_marker, base_backup
from flows.restore import pitr_drill, restore
from socialnet_ops.adapters.pg_recovery import stop_restored_server
from socialnet_ops.core.backups import BackupError, BackupTarget, VerificationError
from tasks.physical_backups import mark_restore_point
from tests.integration.backup.conftest import (
    BUCKET,
    ArchivingServer,
    Emulator,
    execute,
    fetch,
    target_for,
    task_run_lines,
)
from tests.support.postgres import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@dataclass
class History:
    target: BackupTarget
    between: datetime  # after 'before' was committed, before 'after' was
    full_label: str
    incremental_label: str


@pytest.fixture(scope="module")
def pushgateway() -> Iterator[str]:
    """Prometheus's Pushgateway (Debian's), where the drill pushes RTO and RPO."""
    binary = shutil.which("prometheus-pushgateway")
    assert binary, "prometheus-pushgateway is not installed: apt-get install prometheus-pushgateway"
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _status(f"{url}/-/ready") == 200, timeout_s=15, what="the Pushgateway")
    yield url
    process.terminate()
    process.wait(timeout=10)


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def switch_and_wait(server: ArchivingServer) -> None:
    """Close the current WAL segment and wait until it is archived: `latest` reaches it."""
    segment = fetch(server.server, "postgres", "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    wait_for(
        lambda: (
            (
                fetch(server.server, "postgres", "SELECT last_archived_wal FROM pg_stat_archiver")[
                    0
                ][0]
                or ""
            )
            >= segment
        ),
        timeout_s=30,
        what=f"WAL segment {segment} archived",
    )


@pytest.fixture(scope="module")
def history(
    prefect_server: None, archiving: ArchivingServer, emulator: Emulator, pushgateway: str
) -> History:
    server = archiving.server
    server.create_database("pitr")
    execute(server, "pitr", "CREATE TABLE events (id int PRIMARY KEY, note text)")
    target = target_for(server, "pitr", emulator, archiving.engine, pushgateway)
    full = base_backup(env="local", target=target)
    assert (full.backup_type, full.archiving_problem) == ("full", None)
    execute(server, "pitr", "INSERT INTO events VALUES (1, 'before')")
    time.sleep(0.2)
    between = fetch(server, "postgres", "SELECT clock_timestamp()")[0][0]
    mark_restore_point(target, "release-1.0.0-staging")
    time.sleep(0.2)
    execute(server, "pitr", "INSERT INTO events VALUES (2, 'after')")
    # Into the first repository only (the full went into both): one copy is proof enough.
    primary_only = target.model_copy(
        update={"engine": archiving.engine.model_copy(update={"repositories": (1,)})}
    )
    incremental = base_backup(env="local", target=primary_only)
    execute(server, "pitr", "INSERT INTO events VALUES (3, 'latest')")
    switch_and_wait(archiving)
    return History(target, between, full.backup_label, incremental.backup_label)


def test_a_second_backup_is_incremental_and_the_first_is_copied_to_the_second_bucket(
    history: History, archiving: ArchivingServer, emulator: Emulator
) -> None:
    assert history.incremental_label.startswith(history.full_label + "_")
    assert history.incremental_label.endswith("I")
    info = subprocess.run(
        [
            "runuser", "-u", archiving.engine.system_user, "--", "pgbackrest",
            f"--config={archiving.engine.config_path}", "--stanza=local", "--output=json", "info",
        ],
        capture_output=True, text=True, check=True, cwd="/",
    )  # fmt: skip
    backups = json.loads(info.stdout)[0]["backup"]
    by_repo = {(b["database"]["repo-key"], b["type"]) for b in backups}
    assert {(1, "full"), (1, "incr"), (2, "full")} <= by_repo
    # Encrypted at rest: the repository's manifest files are not readable text.
    s3 = emulator.client()
    keys = [
        item["Key"]
        for item in s3.list_objects_v2(Bucket=BUCKET, Prefix="pgbackrest/local/backup/")["Contents"]
        if item["Key"].endswith("/backup.manifest")
    ]
    body = s3.get_object(Bucket=BUCKET, Key=keys[0])["Body"].read()
    assert b"[backup]" not in body and b"pg_data" not in body


@pytest.fixture
def restore_dir() -> Iterator[Path]:
    folder = Path(f"/tmp/socialnet-pitr-test-{time.monotonic_ns()}")
    yield folder
    if (folder / "data").exists():
        stop_restored_server(folder / "data")
    shutil.rmtree(folder, ignore_errors=True)


def events(archiving: ArchivingServer, port: int) -> list[tuple[int, str]]:
    return fetch(archiving.server, "pitr", "SELECT id, note FROM events ORDER BY id", port=port)


def test_restore_to_a_moment_between_two_writes_then_delta_to_the_latest(
    history: History, archiving: ArchivingServer, restore_dir: Path
) -> None:
    result = restore(
        env="local",
        point_in_time=history.between,
        restore_dir=str(restore_dir),
        target=history.target,
    )
    assert events(archiving, result.port) == [(1, "before")]
    assert result.backup_label == history.full_label  # the newest backup before the moment
    assert "recovery stopping before commit" in result.recovery_stop
    assert result.row_counts["public.events"] == 1
    assert not result.delta
    # The live server still has every write: the restore ran beside it, on its own port.
    assert fetch(archiving.server, "pitr", "SELECT count(*) FROM events") == [(3,)]

    stop_restored_server(Path(result.data_dir))
    latest = restore(env="local", latest=True, restore_dir=str(restore_dir), target=history.target)
    assert latest.delta  # only the files that changed were fetched
    assert events(archiving, latest.port) == [(1, "before"), (2, "after"), (3, "latest")]


def test_restore_to_a_named_restore_point(
    history: History, archiving: ArchivingServer, restore_dir: Path
) -> None:
    result = restore(
        env="local",
        restore_point="release-1.0.0-staging",
        restore_dir=str(restore_dir),
        target=history.target,
    )
    assert events(archiving, result.port) == [(1, "before")]
    # The backup taken after the point cannot reach it: recovery starts from the one before.
    assert result.backup_label == history.full_label


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


def test_the_printed_stop_command_stops_the_restored_server_and_the_recovery_is_in_the_logs(
    history: History, archiving: ArchivingServer, private_tmpdir: Path
) -> None:
    state = restore(
        env="local", point_in_time=history.between, target=history.target, return_state=True
    )
    result = state.result()
    data_dir = Path(result.data_dir)
    assert data_dir.parent in restore_folders(private_tmpdir)  # made by the task, not asked
    assert fetch(archiving.server, "pitr", "SELECT 1", port=result.port) == [(1,)]
    stopped = subprocess.run(
        shlex.split(result.stop_with), capture_output=True, text=True, timeout=60
    )
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not (data_dir / "postmaster.pid").exists()
    with pytest.raises(psycopg.OperationalError):
        fetch(archiving.server, "pitr", "SELECT 1", port=result.port)

    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None

    def logged() -> bool:
        lines = task_run_lines(flow_run_id, "recover-cluster")
        return any(
            line.startswith("pgbackrest: ") and "restore command end" in line for line in lines
        ) and any(
            line.startswith("restored server: ") and "recovery stopping before commit" in line
            for line in lines
        )

    wait_for(logged, timeout_s=15, what="pgBackRest's and the server's lines in the run's logs")


def test_a_refused_restore_creates_no_folder(history: History, private_tmpdir: Path) -> None:
    with pytest.raises(BackupError, match="before the oldest backup's end"):
        restore(
            env="local",
            point_in_time=datetime(2000, 1, 1, tzinfo=UTC),
            target=history.target,
        )
    with pytest.raises(BackupError, match="point_in_time and latest both given"):
        restore(env="local", point_in_time=history.between, latest=True, target=history.target)
    assert restore_folders(private_tmpdir) == []


def test_a_pitr_drill_that_recovers_something_else_than_its_marker_fails_and_says_where(
    history: History, archiving: ArchivingServer, emulator: Emulator, pushgateway: str
) -> None:
    """(A passing drill runs on the real platform: tests/integration/flows.)"""
    server = archiving.server
    marker = backup_marker(env="local", target=history.target)
    execute(server, "pitr", "INSERT INTO events VALUES (10, 'after the marker')")
    assert marker.rows >= 3
    # The marker says something else than the data held then.
    s3 = emulator.client()
    document = json.loads(s3.get_object(Bucket=BUCKET, Key=marker.key)["Body"].read())
    document["row_counts"]["public.events"] += 1
    s3.put_object(Bucket=BUCKET, Key=marker.key, Body=json.dumps(document).encode())

    drill_dir = Path(tempfile.mkdtemp(prefix="socialnet-drill-test-"))
    drill_dir.chmod(0o755)
    try:
        # Only markers after the oldest backup are candidates: the one just recorded.
        with pytest.raises(VerificationError, match=r"public\.events: \d+ rows, the marker"):
            pitr_drill(env="local", restore_dir=str(drill_dir), target=history.target)
        assert not (drill_dir / "data" / "postmaster.pid").exists()  # stopped after the check
        (item,) = s3.list_objects_v2(Bucket=BUCKET, Prefix="drills/local/")["Contents"]
        outcome = json.loads(s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read())
        assert not outcome["passed"] and "public.events" in outcome["problem"]
        metrics = httpx.get(f"{pushgateway}/metrics", timeout=5).text
        assert re.search(r'socialnet_pitr_drill_success\{environment="local".*\} 0\n', metrics)
    finally:
        if (drill_dir / "data").exists():
            stop_restored_server(drill_dir / "data")
        shutil.rmtree(drill_dir, ignore_errors=True)
