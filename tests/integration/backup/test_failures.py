"""Failures: S3 gone mid-upload, pg_dump dying, damaged objects. Clear errors, nothing deleted,
no half-written backup listed, the target database untouched."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from flows.backup import backup
from flows.restore import restore
from socialnet_ops.core.backups import BackupError, VerificationError
from tests.integration.backup.conftest import (
    Emulator,
    create_app_database,
    create_large_database,
    data_digest,
    execute,
    fetch,
    target_for,
)
from tests.support.postgres import PostgresServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def large_database(postgres_server: PostgresServer) -> str:
    create_large_database(postgres_server, "bk_large")
    return "bk_large"


def manifests(emulator: Emulator, prefix: str) -> list[str]:
    listed = emulator.client().list_objects_v2(Bucket="socialnet-backups-local", Prefix=prefix)
    return [item["Key"] for item in listed.get("Contents", []) if item["Key"].endswith(".json")]


def unfinished_uploads(emulator: Emulator, prefix: str) -> list[dict[str, Any]]:
    answer = emulator.client().list_multipart_uploads(
        Bucket="socialnet-backups-local", Prefix=prefix
    )
    return list(answer.get("Uploads", []))


def when_upload_has_parts(
    emulator: Emulator, prefix: str, action: Callable[[], None]
) -> threading.Thread:
    """Run `action` once a multipart upload under `prefix` has at least one part."""

    def watch() -> None:
        client = emulator.client()

        def uploading() -> bool:
            for upload in unfinished_uploads(emulator, prefix):
                parts = client.list_parts(
                    Bucket="socialnet-backups-local", Key=upload["Key"], UploadId=upload["UploadId"]
                )
                if parts.get("Parts"):
                    return True
            return False

        wait_for(uploading, timeout_s=60, interval_s=0.02)
        action()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


def test_s3_stopping_mid_upload_fails_the_run_lists_nothing_and_a_rerun_succeeds(
    prefect_server: None, postgres_server: PostgresServer, emulator: Emulator, large_database: str
) -> None:
    target = target_for(postgres_server, large_database, emulator)
    watcher = when_upload_has_parts(emulator, target.dump_prefix, emulator.stop)
    try:
        with pytest.raises(BackupError, match=r"upload of s3://.*failed after \d+ bytes"):
            backup(env="local", target=target)
    finally:
        watcher.join(timeout=60)
        emulator.start()  # same port, same in-process data: the emulator comes back
    assert manifests(emulator, target.dump_prefix) == []
    # The abort could not reach a stopped S3; the next run sweeps the leftover before it starts.
    rerun = backup(env="local", target=target)
    assert manifests(emulator, target.dump_prefix) == [
        f"{target.dump_prefix}{rerun.backup_id}.json"
    ]
    assert unfinished_uploads(emulator, target.dump_prefix) == []
    assert rerun.row_counts == {"public.blobs": 300_000}


def test_pg_dump_dying_mid_dump_aborts_the_upload(
    prefect_server: None, postgres_server: PostgresServer, emulator: Emulator, large_database: str
) -> None:
    target = target_for(postgres_server, large_database, emulator)
    before = manifests(emulator, target.dump_prefix)

    def kill_pg_dump() -> None:
        execute(
            postgres_server,
            "postgres",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'socialnet-backup-pg_dump'",
        )

    watcher = when_upload_has_parts(emulator, target.dump_prefix, kill_pg_dump)
    with pytest.raises(BackupError, match="pg_dump exited with 1"):
        backup(env="local", target=target)
    watcher.join(timeout=60)
    assert manifests(emulator, target.dump_prefix) == before  # nothing added, nothing deleted
    assert unfinished_uploads(emulator, target.dump_prefix) == []


def test_a_database_that_cannot_be_reached_fails_with_where_it_was_looked_for(
    prefect_server: None, postgres_server: PostgresServer, emulator: Emulator
) -> None:
    target = target_for(postgres_server, "bk_does_not_exist", emulator)
    with pytest.raises(
        BackupError, match=r"cannot connect to postgres@127\.0\.0\.1:\d+/bk_does_not_exist"
    ):
        backup(env="local", target=target)


def damage(emulator: Emulator, key: str, how: str) -> None:
    client = emulator.client()
    body = client.get_object(Bucket="socialnet-backups-local", Key=key)["Body"].read()
    if how == "truncated":
        body = body[: len(body) // 2]
    elif how == "corrupt":
        middle = len(body) // 2
        body = (
            body[:middle]
            + bytes(b ^ 0xFF for b in body[middle : middle + 64])
            + body[middle + 64 :]
        )
    client.put_object(Bucket="socialnet-backups-local", Key=key, Body=body)


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("truncated", r"size: downloaded \d+ bytes, the manifest records \d+"),
        ("corrupt", "checksum: SHA-256"),
        ("wrong checksum", "checksum: SHA-256"),
    ],
)
def test_a_damaged_backup_fails_verification_and_leaves_the_target_untouched(
    prefect_server: None,
    postgres_server: PostgresServer,
    emulator: Emulator,
    how: str,
    expected: str,
) -> None:
    name = f"bk_damaged_{how.replace(' ', '_')}"
    create_app_database(postgres_server, name, users=20)
    target = target_for(postgres_server, name, emulator)
    taken = backup(env="local", target=target)
    if how == "wrong checksum":
        client = emulator.client()
        key = f"{target.dump_prefix}{taken.backup_id}.json"
        manifest = client.get_object(Bucket="socialnet-backups-local", Key=key)["Body"].read()
        client.put_object(
            Bucket="socialnet-backups-local",
            Key=key,
            Body=manifest.replace(taken.sha256.encode(), b"0" * 64),
        )
    else:
        damage(emulator, taken.key, how)
    execute(postgres_server, name, "INSERT INTO users (handle) VALUES ('written after the backup')")
    before = data_digest(postgres_server, name)

    with pytest.raises(VerificationError, match=expected) as failure:
        restore(env="local", target=target, target_database=name, confirm_overwrite=True)
    assert f"{name} was not touched" in str(failure.value)
    assert data_digest(postgres_server, name) == before
    leftovers = fetch(
        postgres_server,
        "postgres",
        "SELECT datname FROM pg_database WHERE datname LIKE '%restoring%'",
    )
    assert leftovers == []
    assert manifests(emulator, target.dump_prefix) == [
        f"{target.dump_prefix}{taken.backup_id}.json"
    ]
