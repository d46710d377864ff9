"""Backup ids, manifests, verification and the WAL range arithmetic of point-in-time recovery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from socialnet_ops.core.backups import (
    ArchivedSegment,
    BackupError,
    BackupManifest,
    BackupNotFoundError,
    BackupTarget,
    DatabaseAccess,
    ObjectStore,
    Segment,
    WalGapError,
    archiver_problem,
    archiving_settings,
    compare_row_counts,
    is_backup_id,
    new_backup_id,
    pick_manifest,
    plan_recovery,
    recoverable_window,
    verification_problems,
    wal_to_delete,
)
from socialnet_ops.core.failures import changed_nothing

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def manifest(backup_id: str, at: datetime, **changes: object) -> BackupManifest:
    fields: dict[str, object] = {
        "id": backup_id,
        "kind": "dump",
        "environment": "local",
        "database": "socialnet",
        "key": f"backups/local/socialnet/{backup_id}.dump",
        "format": "pg_dump custom",
        "size_bytes": 100,
        "sha256": "a" * 64,
        "started_at": at,
        "finished_at": at + timedelta(seconds=5),
        "duration_s": 5.0,
        "schema_revision": "abc123",
        "row_counts": {"public.users": 3, "public.posts": 10},
    }
    fields.update(changes)
    return BackupManifest.model_validate(fields)


def test_backup_ids_sort_by_time_and_keys_follow_the_layout() -> None:
    first, second = new_backup_id(T0), new_backup_id(T0 + timedelta(seconds=1))
    assert is_backup_id(first) and first.startswith("20250301T120000Z-")
    assert sorted([second, first]) == [first, second]
    target = BackupTarget(
        environment="staging",
        database=DatabaseAccess(host="h", port=5432, user="u", database="app"),
        store=ObjectStore(bucket="b"),
        database_label="socialnet",
    )
    assert target.data_key("dump", first) == f"backups/staging/socialnet/{first}.dump"
    assert target.manifest_key("dump", first) == f"backups/staging/socialnet/{first}.json"
    assert target.data_key("base", first) == f"basebackups/staging/{first}.tar"
    assert target.wal_prefix == "wal/staging/"


def test_database_access_reads_the_password_file_only_for_the_child_env(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    access = DatabaseAccess.from_socialnet_env(
        {
            "SOCIALNET_DB_HOST": "127.0.0.1",
            "SOCIALNET_DB_PORT": "5433",
            "SOCIALNET_DB_NAME": "socialnet",
            "SOCIALNET_DB_USER": "socialnet",
            "SOCIALNET_DB_PASSWORD_FILE": str(secret),
        }
    )
    assert "s3cret" not in access.model_dump_json()  # what a flow parameter would show
    assert access.libpq_env()["PGPASSWORD"] == "s3cret"
    assert access.libpq_env("other")["PGDATABASE"] == "other"
    assert access.owner_role is None
    owned = DatabaseAccess.from_socialnet_env(
        {
            "SOCIALNET_DB_HOST": "h",
            "SOCIALNET_DB_PORT": "1",
            "SOCIALNET_DB_NAME": "n",
            "SOCIALNET_DB_USER": "socialnet_a",
            "SOCIALNET_DB_OWNER": "socialnet",
        }
    )
    assert owned.owner_role == "socialnet" and "PGPASSWORD" not in owned.libpq_env()
    with pytest.raises(BackupError, match="SOCIALNET_DB_HOST"):
        DatabaseAccess.from_socialnet_env({})


def test_latest_and_by_id_pick_complete_backups_and_errors_name_the_choices() -> None:
    older, newer = manifest("a", T0), manifest("b", T0 + timedelta(hours=1))
    assert pick_manifest([newer, older], "latest") == newer
    assert pick_manifest([newer, older], "a") == older
    with pytest.raises(BackupNotFoundError, match="newest are: a, b"):
        pick_manifest([older, newer], "zzz")
    with pytest.raises(BackupNotFoundError, match="no complete backup yet"):
        pick_manifest([], "latest")


def test_verification_reports_size_checksum_revision_and_each_table() -> None:
    backup = manifest("a", T0)
    assert (
        verification_problems(
            backup,
            size_bytes=100,
            sha256="a" * 64,
            schema_revision="abc123",
            row_counts={"public.users": 3, "public.posts": 10},
        )
        == []
    )
    problems = verification_problems(
        backup,
        size_bytes=50,
        sha256="b" * 64,
        schema_revision="old",
        row_counts={"public.users": 2, "public.extra": 1},
    )
    text = "\n".join(problems)
    assert "downloaded 50 bytes, the manifest records 100" in text
    assert "checksum" in text and "schema revision" in text
    assert compare_row_counts({"t": 1}, {"t": 2}) == ["t: 2 rows restored, 1 backed up"]
    assert "public.posts: missing after restore" in text
    assert "public.extra: not in the backup's manifest" in text


def test_segment_names_roll_over_every_256_segments() -> None:
    segment = Segment.parse("0000000100000000000000FF")
    following = Segment(segment.timeline, segment.number + 1)
    assert following.name == "000000010000000100000000"
    with pytest.raises(ValueError):
        Segment.parse("00000001.history")


def wal(names_and_minutes: list[tuple[str, int]]) -> list[ArchivedSegment]:
    return [ArchivedSegment(name, T0 + timedelta(minutes=m)) for name, m in names_and_minutes]


def base(backup_id: str, minute: int, start_wal: str) -> BackupManifest:
    at = T0 + timedelta(minutes=minute)
    return manifest(backup_id, at, kind="base", start_wal=start_wal, finished_at=at)


SEGMENTS = wal(
    [
        ("000000010000000000000002", 1),
        ("000000010000000000000003", 10),
        ("000000010000000000000004", 20),
        ("000000010000000000000005", 30),
        ("000000010000000000000005.00000028.backup", 30),
        ("000000010000000000000006", 40),
    ]
)


def test_recovery_uses_the_newest_base_before_the_target_and_wal_up_to_it() -> None:
    bases = [base("b1", 0, "000000010000000000000002"), base("b2", 25, "000000010000000000000004")]
    plan = plan_recovery(T0 + timedelta(minutes=15), bases, SEGMENTS)
    assert plan.base.id == "b1"
    assert plan.segments == [
        "000000010000000000000002",
        "000000010000000000000003",
        "000000010000000000000004",
    ]
    later = plan_recovery(T0 + timedelta(minutes=35), bases, SEGMENTS)
    assert later.base.id == "b2"
    assert later.segments[-1] == "000000010000000000000006"
    assert recoverable_window(bases, SEGMENTS) == (T0, T0 + timedelta(minutes=40))


def test_recovery_names_the_missing_segment_and_the_window() -> None:
    bases = [base("b1", 0, "000000010000000000000002")]
    gap = [segment for segment in SEGMENTS if segment.name != "000000010000000000000003"]
    with pytest.raises(WalGapError, match="000000010000000000000003 is missing"):
        plan_recovery(T0 + timedelta(minutes=15), bases, gap)
    with pytest.raises(BackupError, match="after the last archived WAL") as late:
        plan_recovery(T0 + timedelta(hours=5), bases, SEGMENTS)
    with pytest.raises(BackupError, match="no base backup finished before") as early:
        plan_recovery(T0 - timedelta(hours=1), bases, SEGMENTS)
    # A time outside the window is the asker's mistake (rejected: no alert); a gap in the
    # archive is the platform's problem (failed: alerted).
    assert changed_nothing(late.value) and changed_nothing(early.value)
    with pytest.raises(WalGapError) as gap_error:
        plan_recovery(T0 + timedelta(minutes=15), bases, gap)
    assert not changed_nothing(gap_error.value)


def test_wal_retention_keeps_what_the_oldest_kept_base_needs() -> None:
    names = [segment.name for segment in SEGMENTS] + ["00000002.history"]
    doomed = wal_to_delete([base("b2", 25, "000000010000000000000004")], names)
    assert doomed == ["000000010000000000000002", "000000010000000000000003"]
    assert wal_to_delete([], names) == []


def test_archiving_settings_and_archiver_health() -> None:
    settings = archiving_settings(
        ObjectStore(bucket="bkt", endpoint_url="http://127.0.0.1:9"), "local"
    )
    assert "archive_mode=on" in settings
    command = next(s for s in settings if s.startswith("archive_command="))
    assert "wal_archive.py push %p %f --bucket bkt --prefix wal/local" in command
    assert archiver_problem({"last_failed_time": None}) is None
    healthy_again = {"last_failed_time": T0, "last_archived_time": T0 + timedelta(seconds=1)}
    assert archiver_problem(healthy_again) is None
    failing = {
        "last_failed_time": T0,
        "last_archived_time": T0 - timedelta(minutes=1),
        "failed_count": 4,
        "last_failed_wal": "0000000100000000000000AA",
    }
    assert "failing: 4 failures, last on 0000000100000000000000AA" in str(archiver_problem(failing))


def test_request_bodies_are_signed_except_on_loopback() -> None:
    from socialnet_ops.adapters.s3 import s3_client

    def signing(endpoint: str | None) -> object:
        store = ObjectStore(bucket="b", region="eu-west-3", endpoint_url=endpoint)
        return (s3_client(store).meta.config.s3 or {}).get("payload_signing_enabled")

    # No network between the platform and its local emulator: no SHA-256 pass per part there.
    assert signing("http://127.0.0.1:5000") is False
    assert signing("http://localhost:5000") is False
    # Anywhere else botocore decides: it signs over plain HTTP and relies on TLS over HTTPS.
    assert signing("http://minio.internal:9000") is None
    assert signing(None) is None
