"""Backup ids, manifests, verification and the WAL archiver's health (logical backups)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from socialnet_ops.core.backups import (
    BackupError,
    BackupManifest,
    BackupNotFoundError,
    BackupTarget,
    DatabaseAccess,
    ObjectStore,
    archiver_problem,
    compare_row_counts,
    is_backup_id,
    new_backup_id,
    pick_manifest,
    verification_problems,
)

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


def test_archiver_health() -> None:
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
