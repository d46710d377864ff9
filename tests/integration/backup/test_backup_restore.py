"""Logical backups: a round trip with identical data, retention after each success, the drill,
and the confirmation a restore over an existing database needs."""

from __future__ import annotations

import pytest

from flows.backup import backup
from flows.restore import OverwriteNotConfirmedError, restore, restore_drill
from tasks.ledger import load_ledger
from tests.integration.backup.conftest import (
    Emulator,
    create_app_database,
    data_digest,
    execute,
    fetch,
    target_for,
)
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.integration


def databases(server: PostgresServer, like: str) -> list[str]:
    rows = fetch(server, "postgres", f"SELECT datname FROM pg_database WHERE datname LIKE '{like}'")
    return sorted(row[0] for row in rows)


def test_backup_then_restore_gives_identical_data_and_retention_prunes(
    prefect_server: None, postgres_server: PostgresServer, emulator: Emulator
) -> None:
    create_app_database(postgres_server, "bk_app")
    target = target_for(postgres_server, "bk_app", emulator)

    first = backup(env="local", release="v1", target=target)
    manifest_key = f"backups/local/bk_app/{first.backup_id}.json"
    head = emulator.client().head_object(Bucket=target.store.bucket, Key=first.key)
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"]["release"] == "v1"
    assert head["Metadata"]["schema-revision"] == "0002_posts"
    assert first.row_counts == {
        "public.alembic_version": 1,
        "public.posts": 1000,
        "public.users": 50,
    }
    assert emulator.client().head_object(Bucket=target.store.bucket, Key=manifest_key)
    assert load_ledger("local").last_backup["id"] == first.backup_id  # type: ignore[index]

    restored = restore(env="local", target=target)
    assert restored.backup_id == first.backup_id
    assert restored.database.startswith("restore_local_")
    assert data_digest(postgres_server, restored.database) == data_digest(postgres_server, "bk_app")
    assert not databases(postgres_server, "%restoring%")

    # Same day, GFS daily: the second backup supersedes the first, the dry run only says so.
    execute(postgres_server, "bk_app", "INSERT INTO users (handle) VALUES ('late')")
    dry = backup(env="local", release="v1", retention_dry_run=True, target=target)
    assert dry.retention.deleted == [first.backup_id]
    keys = [
        item["Key"]
        for item in emulator.client().list_objects_v2(
            Bucket=target.store.bucket, Prefix=target.dump_prefix
        )["Contents"]
    ]
    assert manifest_key in keys
    third = backup(env="local", release="v1", target=target)
    assert sorted(third.retention.deleted) == sorted([first.backup_id, dry.backup_id])
    assert list(third.retention.kept) == [third.backup_id]
    left = emulator.client().list_objects_v2(Bucket=target.store.bucket, Prefix=target.dump_prefix)
    assert sorted(item["Key"].rsplit("/", 1)[1] for item in left["Contents"]) == [
        f"{third.backup_id}.dump",
        f"{third.backup_id}.json",
    ]


def test_restore_over_an_existing_database_needs_confirmation_then_replaces_it(
    prefect_server: None, postgres_server: PostgresServer, emulator: Emulator
) -> None:
    create_app_database(postgres_server, "bk_live", users=10)
    target = target_for(postgres_server, "bk_live", emulator)
    taken = backup(env="local", target=target)
    before = data_digest(postgres_server, "bk_live")
    execute(postgres_server, "bk_live", "DELETE FROM posts")  # the accident

    with pytest.raises(OverwriteNotConfirmedError, match="the environment's live database"):
        restore(env="local", target=target, target_database="bk_live")
    assert fetch(postgres_server, "bk_live", "SELECT count(*) FROM posts") == [(0,)]

    result = restore(
        env="local",
        backup_id=taken.backup_id,
        target=target,
        target_database="bk_live",
        confirm_overwrite=True,
    )
    assert result.replaced is True
    assert data_digest(postgres_server, "bk_live") == before
    kept = result.previous_database_kept_as
    assert fetch(postgres_server, kept, "SELECT count(*) FROM posts") == [(0,)]


def test_the_restore_drill_verifies_the_latest_backup_and_drops_its_scratch_database(
    prefect_server: None, postgres_server: PostgresServer, emulator: Emulator
) -> None:
    create_app_database(postgres_server, "bk_drill", users=5)
    target = target_for(postgres_server, "bk_drill", emulator)
    taken = backup(env="local", target=target)
    drill = restore_drill(env="local", target=target)
    assert drill.backup_id == taken.backup_id
    assert drill.rows == 1 + 5 + 100
    assert not databases(postgres_server, "drill_local_%")
