"""pgBackRest as data: its configuration, its catalog, and the decisions the flows make around
it (backup type, retention by count and window, drill markers, the release guard)."""

from __future__ import annotations

import configparser
import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from socialnet_ops.core.backups import BackupError
from socialnet_ops.core.environments import (
    EnvironmentError,
    PhysicalBackupPolicy,
    load_environment,
)
from socialnet_ops.core.paths import environments_dir
from socialnet_ops.core.physical_backups import (
    ENGINE_RETENTION_OFF,
    DrillRecord,
    EngineSetup,
    PhysicalBackup,
    RecoveryMarker,
    Repository,
    RestorePoint,
    archiving_settings,
    backup_before,
    choose_backup_type,
    content_checksum,
    describe_target,
    drill_metrics,
    marker_mismatches,
    parse_catalog,
    pick_marker,
    plan_retention,
    release_guard_problems,
    render_config,
    segment_number,
)

pytestmark = pytest.mark.unit

NOW = datetime(2025, 3, 25, 12, 0, tzinfo=UTC)
HOUR = 3600.0
DAY = 86400.0


# --- pgbackrest.conf ---------------------------------------------------------------------------


def setup(*repositories: Repository) -> EngineSetup:
    return EngineSetup(
        stanza="local",
        data_dir="/var/lib/socialnet/local/pgdata",
        port=5433,
        socket_dir="/var/run/socialnet/local",
        repositories=repositories
        or (Repository(index=1, bucket="socialnet-backups-local", region="eu-west-3", host="s3"),),
        process_max=4,
        compress="lz4",
        spool_path="/var/spool/pgbackrest",
        lock_path="/tmp/pgbackrest",
        log_path="/var/log/pgbackrest",
    )


def sections(text: str) -> configparser.ConfigParser:
    # strict: a key written twice in a section is an error, as pgBackRest reports it.
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.read_string(text)
    return parser


def test_the_config_has_both_encrypted_repositories_and_the_cluster() -> None:
    primary = Repository(
        index=1, bucket="socialnet-backups-production", region="eu-west-3", host="s3.amazonaws.com"
    )
    emulator = Repository(
        index=2,
        bucket="socialnet-backups-copy",
        region="us-east-1",
        host="127.0.0.1",
        port=18443,
        verify_tls=False,
        uri_style="path",
    )
    text = render_config(setup(primary, emulator), "passphrase-x", "AKIAKEY", "s3-secret-y")
    config = sections(text)
    assert config.sections() == ["global", "local"]
    glob = config["global"]
    for index, bucket in ((1, "socialnet-backups-production"), (2, "socialnet-backups-copy")):
        repo = f"repo{index}"
        assert glob[f"{repo}-type"] == "s3"
        assert glob[f"{repo}-s3-bucket"] == bucket
        assert glob[f"{repo}-path"] == "/pgbackrest/local"
        assert glob[f"{repo}-cipher-type"] == "aes-256-cbc"
        assert glob[f"{repo}-cipher-pass"] == "passphrase-x"
        assert glob[f"{repo}-s3-key"] == "AKIAKEY"
        assert glob[f"{repo}-s3-key-secret"] == "s3-secret-y"
        # The flow expires by count and window itself: pgBackRest's own retention never acts.
        assert glob[f"{repo}-retention-full"] == str(ENGINE_RETENTION_OFF) == "9999999"
    # TLS is verified except towards the loopback terminator that asked not to be.
    assert glob["repo1-storage-verify-tls"] == "y"
    assert glob["repo2-storage-verify-tls"] == "n"
    assert (glob["repo1-s3-endpoint"], glob["repo1-storage-port"]) == ("s3.amazonaws.com", "443")
    assert (glob["repo2-s3-endpoint"], glob["repo2-storage-port"]) == ("127.0.0.1", "18443")
    assert (glob["repo1-s3-uri-style"], glob["repo2-s3-uri-style"]) == ("host", "path")
    assert (glob["repo1-s3-region"], glob["repo2-s3-region"]) == ("eu-west-3", "us-east-1")
    assert glob["compress-type"] == "lz4" and glob["process-max"] == "4"
    assert glob["archive-async"] == "y" and glob["spool-path"] == "/var/spool/pgbackrest"
    assert glob["start-fast"] == "y"
    cluster = config["local"]
    assert dict(cluster) == {
        "pg1-path": "/var/lib/socialnet/local/pgdata",
        "pg1-port": "5433",
        "pg1-socket-path": "/var/run/socialnet/local",
    }


def test_one_repository_means_no_repo2_and_tls_verified() -> None:
    text = render_config(setup(), "pass", "key", "secret")
    assert "repo2-" not in text
    assert "repo1-storage-verify-tls=y" in text.splitlines()
    assert "storage-verify-tls=n" not in text
    assert text.count("repo1-cipher-pass=pass") == 1


def test_repository_and_setup_bounds_are_checked() -> None:
    with pytest.raises(ValidationError):
        Repository(index=5, bucket="b", region="r", host="h")
    with pytest.raises(ValidationError):
        EngineSetup.model_validate({**setup().model_dump(), "process_max": 17})
    with pytest.raises(ValidationError):
        EngineSetup.model_validate({**setup().model_dump(), "compress": "gz"})


def test_postgres_archives_wal_through_pgbackrest() -> None:
    settings = archiving_settings("/etc/pgbackrest/local.conf", "local", "/usr/bin/pgbackrest")
    assert settings == [
        "wal_level=replica",
        "archive_mode=on",
        "archive_command=/usr/bin/pgbackrest --config=/etc/pgbackrest/local.conf "
        "--stanza=local archive-push %p",
        "archive_timeout=60",
    ]
    assert archiving_settings("c", "s", "b", timeout_s=15)[-1] == "archive_timeout=15"


# --- the catalog ---------------------------------------------------------------------------------

# `pgbackrest --stanza=local info --output=json` with two repositories: repo1 holds a full, a
# differential and an incremental; repo2 (the copy bucket) its own full, taken right after. The
# copy's archive is ahead of the primary's (repo1 had a failed push): a recovery from repo1 reaches
# only repo1's newest segment.
INFO_JSON = """
[
  {
    "archive": [
      {"database": {"id": 1, "repo-key": 1}, "id": "16-1",
       "max": "000000010000000000000009", "min": "000000010000000000000004"},
      {"database": {"id": 1, "repo-key": 2}, "id": "16-1",
       "max": "00000001000000000000000A", "min": "000000010000000000000006"}
    ],
    "backup": [
      {
        "archive": {"start": "000000010000000000000004", "stop": "000000010000000000000004"},
        "backrest": {"format": 5, "version": "2.54.2"},
        "database": {"id": 1, "repo-key": 1},
        "error": false,
        "info": {"delta": 31457280, "repository": {"delta": 4194304, "size": 4194304},
                 "size": 31457280},
        "label": "20250301-020000F",
        "lsn": {"start": "0/4000028", "stop": "0/4000100"},
        "prior": null,
        "reference": null,
        "timestamp": {"start": 1740794400, "stop": 1740794600},
        "type": "full"
      },
      {
        "archive": {"start": "000000010000000000000006", "stop": "000000010000000000000006"},
        "backrest": {"format": 5, "version": "2.54.2"},
        "database": {"id": 1, "repo-key": 2},
        "error": false,
        "info": {"delta": 31457280, "repository": {"delta": 4194401, "size": 4194401},
                 "size": 31457280},
        "label": "20250301-021000F",
        "lsn": {"start": "0/6000028", "stop": "0/6000100"},
        "prior": null,
        "reference": null,
        "timestamp": {"start": 1740795000, "stop": 1740795185},
        "type": "full"
      },
      {
        "archive": {"start": "000000010000000000000008", "stop": "000000010000000000000008"},
        "backrest": {"format": 5, "version": "2.54.2"},
        "database": {"id": 1, "repo-key": 1},
        "error": false,
        "info": {"delta": 1048576, "repository": {"delta": 131072, "size": 4325376},
                 "size": 31457280},
        "label": "20250301-020000F_20250302-020000D",
        "lsn": {"start": "0/8000028", "stop": "0/8000100"},
        "prior": "20250301-020000F",
        "reference": ["20250301-020000F"],
        "timestamp": {"start": 1740880800, "stop": 1740880841},
        "type": "diff"
      },
      {
        "archive": {"start": "000000010000000000000009", "stop": "000000010000000000000009"},
        "backrest": {"format": 5, "version": "2.54.2"},
        "database": {"id": 1, "repo-key": 1},
        "error": false,
        "info": {"delta": 16384, "repository": {"delta": 2048, "size": 4327424},
                 "size": 31457280},
        "label": "20250301-020000F_20250302-080000I",
        "lsn": {"start": "0/9000028", "stop": "0/9000100"},
        "prior": "20250301-020000F_20250302-020000D",
        "reference": ["20250301-020000F", "20250301-020000F_20250302-020000D"],
        "timestamp": {"start": 1740902400, "stop": 1740902412},
        "type": "incr"
      }
    ],
    "cipher": "aes-256-cbc",
    "db": [
      {"id": 1, "repo-key": 1, "system-id": 7476860466356453385, "version": "16"},
      {"id": 1, "repo-key": 2, "system-id": 7476860466356453385, "version": "16"}
    ],
    "name": "local",
    "repo": [
      {"cipher": "aes-256-cbc", "key": 1, "status": {"code": 0, "message": "ok"}},
      {"cipher": "aes-256-cbc", "key": 2, "status": {"code": 0, "message": "ok"}}
    ],
    "status": {"code": 0, "lock": {"backup": {"held": false}}, "message": "ok"}
  },
  {
    "archive": [],
    "backup": [],
    "cipher": "aes-256-cbc",
    "db": [],
    "name": "staging",
    "repo": [{"cipher": "aes-256-cbc", "key": 1, "status": {"code": 0, "message": "ok"}}],
    "status": {"code": 2, "lock": {"backup": {"held": false}}, "message": "no valid backups"}
  }
]
"""


def test_the_catalog_reads_every_backup_of_the_stanza_in_each_repository() -> None:
    catalog = parse_catalog(INFO_JSON, "local")
    assert (catalog.stanza, catalog.status) == ("local", "ok")
    assert [(b.label, b.type, b.repository) for b in catalog.backups] == [
        ("20250301-020000F", "full", 1),
        ("20250301-021000F", "full", 2),
        ("20250301-020000F_20250302-020000D", "diff", 1),
        ("20250301-020000F_20250302-080000I", "incr", 1),
    ]
    full, copy_full, diff, incr = catalog.backups
    assert full.started_at == datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
    assert full.stopped_at == datetime(2025, 3, 1, 2, 3, 20, tzinfo=UTC)
    assert full.duration_s == 200.0
    assert (full.wal_start, full.wal_stop) == ("000000010000000000000004",) * 2
    # Size is the database's; stored is what this backup added to the bucket (compressed).
    assert (full.size_bytes, full.stored_bytes) == (31457280, 4194304)
    assert (incr.size_bytes, incr.stored_bytes) == (31457280, 2048)
    assert full.prior is None and diff.prior == full.label and incr.prior == diff.label
    assert [b.label for b in catalog.in_repository(1)] == [full.label, diff.label, incr.label]
    assert catalog.in_repository(2) == [copy_full]
    assert catalog.latest() == incr and catalog.latest(2) == copy_full
    assert catalog.latest(3) is None
    # What a recovery from the primary repository can reach, not the copy's archive.
    assert catalog.archive_max_wal == "000000010000000000000009"


def test_the_catalog_of_an_empty_or_missing_stanza_and_of_broken_output() -> None:
    empty = parse_catalog(INFO_JSON, "staging")
    assert empty.status == "no valid backups"
    assert empty.backups == () and empty.archive_max_wal is None and empty.latest() is None
    missing = parse_catalog(INFO_JSON, "production")
    assert missing.status == "missing stanza" and missing.backups == ()
    assert parse_catalog("[]", "local").status == "missing stanza"
    with pytest.raises(BackupError, match="pgbackrest info: not JSON"):
        parse_catalog("ERROR: [055]: unable to load info file", "local")


def test_the_catalog_sorts_backups_oldest_first_whatever_the_output_order() -> None:
    entries = json.loads(INFO_JSON)
    entries[0]["backup"].reverse()
    shuffled = json.dumps(entries)
    assert parse_catalog(shuffled, "local") == parse_catalog(INFO_JSON, "local")


# --- which type a backup takes -------------------------------------------------------------------


def backup(
    label: str, kind: str, started: datetime, minutes: float = 10, repository: int = 1
) -> PhysicalBackup:
    return PhysicalBackup.model_validate(
        {
            "label": label,
            "type": kind,
            "repository": repository,
            "started_at": started,
            "stopped_at": started + timedelta(minutes=minutes),
            "wal_start": "000000010000000000000010",
            "wal_stop": "000000010000000000000011",
            "size_bytes": 1000,
            "stored_bytes": 100,
        }
    )


def ago(hours: float) -> datetime:
    return NOW - timedelta(hours=hours)


def test_the_first_backup_and_one_after_full_every_are_full() -> None:
    assert choose_backup_type(NOW, [], 7 * DAY, DAY) == (
        "full",
        "no full backup in the repository yet",
    )
    old = [
        backup("F", "full", ago(8 * 24)),
        backup("D", "diff", ago(2)),
        backup("I", "incr", ago(1)),
    ]
    kind, why = choose_backup_type(NOW, old, 7 * DAY, DAY)
    assert kind == "full" and why == "the newest full backup is 192.0 h old"
    # Exactly full_every old is due.
    assert choose_backup_type(NOW, [backup("F", "full", ago(7 * 24))], 7 * DAY, DAY)[0] == "full"
    # A differential only is no full backup.
    assert choose_backup_type(NOW, [backup("D", "diff", ago(1))], 7 * DAY, DAY)[0] == "full"


def test_a_differential_once_the_newest_full_or_differential_is_diff_every_old() -> None:
    only_full = [backup("F", "full", ago(48))]
    kind, why = choose_backup_type(NOW, only_full, 7 * DAY, DAY)
    assert kind == "diff" and why == "the newest full or differential backup is 48.0 h old"
    # Incrementals do not reset the differential's clock.
    with_incrementals = [
        backup("F", "full", ago(72)),
        backup("D", "diff", ago(30)),
        backup("I1", "incr", ago(6)),
        backup("I2", "incr", ago(1)),
    ]
    kind, why = choose_backup_type(NOW, with_incrementals, 7 * DAY, DAY)
    assert kind == "diff" and "30.0 h old" in why


def test_an_incremental_otherwise() -> None:
    recent = [backup("F", "full", ago(72)), backup("D", "diff", ago(2))]
    assert choose_backup_type(NOW, recent, 7 * DAY, DAY) == (
        "incr",
        "a full or differential backup is 2.0 h old",
    )
    assert choose_backup_type(NOW, [backup("F", "full", ago(3))], 7 * DAY, DAY)[0] == "incr"


# --- retention -----------------------------------------------------------------------------------

# A weekly full (each taking an hour) with a differential the next day: now is day 24.
DAY0 = NOW - timedelta(days=24)
WEEKLY = [
    item
    for day in (0, 7, 14, 21)
    for item in (
        backup(f"F{day}", "full", DAY0 + timedelta(days=day), minutes=60),
        backup(f"F{day}_D", "diff", DAY0 + timedelta(days=day + 1), minutes=5),
    )
]


def test_retention_by_count_keeps_the_newest_fulls() -> None:
    plan = plan_retention(NOW, WEEKLY, keep_full=2, window_s=None)
    assert plan.keep == ("F14", "F21")
    assert plan.expire == ("F0", "F7")  # oldest first; their differentials go with them
    assert plan.reasons == {
        "F14": "one of the newest 2 full backups",
        "F21": "one of the newest 2 full backups",
    }
    assert plan_retention(NOW, WEEKLY, keep_full=10, window_s=None).expire == ()
    assert plan_retention(NOW, [], keep_full=2, window_s=None).keep == ()


def test_retention_by_window_keeps_the_newest_full_ending_before_it_and_every_later_one() -> None:
    # Fulls start at 12:00 on days 0, 7, 14, 21 and end at 13:00; now is day 24 at 12:00.
    # A 9-day window starts on day 15: F14 covers all of it.
    plan = plan_retention(NOW, WEEKLY, keep_full=0, window_s=9 * DAY)
    assert plan.keep == ("F14", "F21") and plan.expire == ("F0", "F7")
    window_start = NOW - timedelta(days=9)
    assert plan.reasons == {
        label: f"needed to recover to any time since {window_start:%Y-%m-%d %H:%M} UTC"
        for label in ("F14", "F21")
    }
    # A window starting while F14 was running: its first half hour needs F7, the newest full
    # that had ended by then.
    plan = plan_retention(NOW, WEEKLY, keep_full=0, window_s=10 * DAY - 1800)
    assert plan.keep == ("F7", "F14", "F21") and plan.expire == ("F0",)
    # A full that ended exactly when the window starts is enough on its own.
    f14_stop = WEEKLY[4].stopped_at
    assert WEEKLY[4].label == "F14"
    plan = plan_retention(NOW, WEEKLY, keep_full=0, window_s=(NOW - f14_stop).total_seconds())
    assert plan.keep == ("F14", "F21")
    # A window longer than the history keeps everything; one inside the newest full's life
    # keeps that full only.
    assert plan_retention(NOW, WEEKLY, keep_full=0, window_s=60 * DAY).expire == ()
    assert plan_retention(NOW, WEEKLY, keep_full=0, window_s=HOUR).keep == ("F21",)


def test_retention_by_count_and_window_keeps_what_either_needs() -> None:
    # The window needs more than the count.
    plan = plan_retention(NOW, WEEKLY, keep_full=1, window_s=10.5 * DAY)
    assert plan.keep == ("F7", "F14", "F21") and plan.expire == ("F0",)
    assert plan.reasons["F21"] == "one of the newest 1 full backups"
    assert plan.reasons["F7"].startswith("needed to recover to any time since")
    # The count needs more than the window.
    plan = plan_retention(NOW, WEEKLY, keep_full=3, window_s=DAY)
    assert plan.keep == ("F7", "F14", "F21") and plan.expire == ("F0",)
    assert set(plan.reasons.values()) == {"one of the newest 3 full backups"}
    # Differentials and incrementals are never planned on their own.
    assert not any("_D" in label for label in plan.keep + plan.expire)


# --- recovery markers ----------------------------------------------------------------------------

OLDEST_STOP = datetime(2025, 3, 1, 2, 3, 20, tzinfo=UTC)
ARCHIVED = "000000010000000100000002"


def marker(minutes: float, segment: str, **tables: int) -> RecoveryMarker:
    counts = tables or {"public.users": 3, "public.posts": 10}
    return RecoveryMarker(
        environment="local",
        taken_at=OLDEST_STOP + timedelta(minutes=minutes),
        wal_segment=segment,
        row_counts=counts,
        table_checksums={table: f"md5-{table}-{count}" for table, count in counts.items()},
    )


def test_the_marker_checksum_covers_every_table_in_any_order() -> None:
    one = marker(5, ARCHIVED)
    assert one.checksum == content_checksum(
        {"public.posts": 10, "public.users": 3},
        {"public.users": "md5-public.users-3", "public.posts": "md5-public.posts-10"},
    )
    assert one.checksum != marker(5, ARCHIVED, **{"public.users": 4, "public.posts": 10}).checksum
    assert content_checksum({"t": 1}, {"t": "a"}) != content_checksum({"t": 1}, {"t": "b"})
    assert len(one.checksum) == 64
    assert one.key() == "markers/local/20250301T020820.000000Z.json"


def test_wal_segments_order_across_log_files_and_timelines() -> None:
    assert segment_number("0000000100000000000000FF") < segment_number("000000010000000100000000")
    assert segment_number("000000020000000000000001") > segment_number("0000000100000000000000FF")
    assert segment_number("00000001000000010000000A") == (1, 0x10000000A)


def test_a_drill_picks_only_markers_a_recovery_can_reach() -> None:
    before_backup = marker(-1, "000000010000000000000001")
    reachable = [
        marker(10, "0000000100000000000000FE"),
        marker(20, "000000010000000100000001"),
        marker(30, ARCHIVED),  # its commit is in the last archived segment: reachable
    ]
    not_archived = marker(40, "000000010000000100000003")
    markers = [not_archived, *reachable, before_backup]
    picked = {pick_marker(markers, OLDEST_STOP, ARCHIVED, seed).taken_at for seed in range(60)}
    assert picked == {item.taken_at for item in reachable}  # random, inside the window only
    # The same seed picks the same marker (a drill can be repeated).
    assert pick_marker(markers, OLDEST_STOP, ARCHIVED, 7) == pick_marker(
        list(reversed(markers)), OLDEST_STOP, ARCHIVED, 7
    )
    # A marker taken exactly when the oldest backup ended is not after it.
    assert pick_marker([marker(0, ARCHIVED), marker(1, ARCHIVED)], OLDEST_STOP, ARCHIVED, 1) == (
        marker(1, ARCHIVED)
    )


def test_no_reachable_marker_says_how_many_were_recorded_and_the_window() -> None:
    markers = [marker(-1, "000000010000000000000001"), marker(40, "000000010000000100000003")]
    with pytest.raises(BackupError) as raised:
        pick_marker(iter(markers), OLDEST_STOP, ARCHIVED)
    message = str(raised.value)
    assert "no recovery marker inside the recoverable window (2 recorded" in message
    assert "oldest backup ended 2025-03-01T02:03:20+00:00" in message
    assert f"WAL archived up to {ARCHIVED}" in message
    assert "run backup-marker after a base backup" in message
    with pytest.raises(BackupError, match=r"\(0 recorded; oldest backup ended 2025"):
        pick_marker([], OLDEST_STOP, ARCHIVED)
    with pytest.raises(BackupError, match="1 recorded; oldest backup ended never"):
        pick_marker([marker(5, ARCHIVED)], None, ARCHIVED)
    with pytest.raises(BackupError, match="WAL archived up to nothing"):
        pick_marker([marker(5, ARCHIVED)], OLDEST_STOP, None)


def test_a_recovered_database_is_compared_table_by_table() -> None:
    expected = marker(5, ARCHIVED)
    assert marker_mismatches(expected, expected.row_counts, expected.table_checksums) == []
    counts = {"public.users": 3, "public.posts": 9}
    assert marker_mismatches(expected, counts, expected.table_checksums) == [
        "public.posts: 9 rows, the marker recorded 10"
    ]
    checksums = {**expected.table_checksums, "public.users": "md5-other"}
    assert marker_mismatches(expected, expected.row_counts, checksums) == [
        "public.users: same row count, different content"
    ]
    # A table lost in recovery, and one the marker did not know, are both named.
    lost = marker_mismatches(expected, {"public.users": 3}, {"public.users": "md5-public.users-3"})
    assert len(lost) == 1 and lost[0].startswith("public.posts: ")
    assert lost[0].endswith("the marker recorded 10 rows")
    extra = marker_mismatches(
        expected,
        {**expected.row_counts, "public.likes": 2},
        {**expected.table_checksums, "public.likes": "x"},
    )
    assert len(extra) == 1 and extra[0].startswith("public.likes: 2 rows")


# --- restore points and where a recovery starts -----------------------------------------------


def test_restore_point_names_are_what_postgres_accepts() -> None:
    point = RestorePoint(name="pre-deploy_1.4.0+build.7", created_at=NOW, lsn="0/9000100")
    assert point.name == "pre-deploy_1.4.0+build.7"
    for bad in ("with space", "", "x" * 64, "semi;colon", "quote'"):
        with pytest.raises(ValidationError):
            RestorePoint(name=bad, created_at=NOW, lsn="0/1")
    assert RestorePoint(name="x" * 63, created_at=NOW, lsn="0/1").name == "x" * 63


def test_a_recovery_starts_from_the_newest_backup_that_ended_before_the_target() -> None:
    history = [
        backup("F", "full", ago(48), minutes=60),
        backup("F_D", "diff", ago(24), minutes=10),
        backup("F_I", "incr", ago(2), minutes=10),
    ]
    assert backup_before(history, ago(10)) == history[1]
    assert backup_before(history, NOW) == history[2]
    # The incremental was still running: the differential is the start.
    assert backup_before(history, ago(2) + timedelta(minutes=5)) == history[1]
    # Ending exactly at the target is not before it.
    assert backup_before(history, history[2].stopped_at) == history[1]
    assert backup_before(history, ago(47.5)) is None
    assert backup_before([], NOW) is None


def test_targets_are_described_for_people() -> None:
    assert describe_target("latest", None) == "the end of the archived WAL"
    assert describe_target("time", "2025-03-01T12:00:00+00:00") == "time 2025-03-01T12:00:00+00:00"
    assert describe_target("name", "pre-deploy") == "name pre-deploy"


# --- drills and the release guard -----------------------------------------------------------------


def drill(days_ago: float, passed: bool = True, **fields: Any) -> DrillRecord:
    return DrillRecord(
        environment="production",
        drill_id="20250324T120000Z-ab12",
        finished_at=NOW - timedelta(days=days_ago),
        passed=passed,
        **fields,
    )


def guard(**overrides: Any) -> list[str]:
    arguments: dict[str, Any] = {
        "archiving_problem": None,
        "last_backup": backup("20250325-020000F", "full", ago(10)),
        "max_backup_age_s": 26 * HOUR,
        "last_drill": drill(1),
        "max_drill_age_s": 8 * DAY,
    }
    arguments.update(overrides)
    return release_guard_problems(NOW, **arguments)


def test_a_healthy_environment_may_release() -> None:
    assert guard() == []
    # Just inside both limits.
    at_limit = backup("B", "incr", NOW - timedelta(hours=26, minutes=10))
    assert guard(last_backup=at_limit, last_drill=drill(8)) == []


def test_each_reason_a_release_must_not_start() -> None:
    failing = "WAL archiving is failing: 4 failures, last on 0000000100000000000000AA"
    assert guard(archiving_problem=failing) == [failing]
    assert guard(last_backup=None) == ["no physical backup exists: run base-backup first"]
    stale = backup("20250323-020000F", "full", ago(30), minutes=0)
    assert guard(last_backup=stale) == [
        "the last physical backup (20250323-020000F) is 30.0 h old; the policy allows 26.0 h"
    ]
    assert guard(last_drill=None) == ["no point-in-time drill has run: run pitr-drill first"]
    failed = drill(0.5, passed=False, problem="public.posts: 9 rows, the marker recorded 10")
    assert guard(last_drill=failed) == [
        "the last point-in-time drill (20250324T120000Z-ab12) failed: public.posts: 9 rows, "
        "the marker recorded 10"
    ]
    assert guard(last_drill=drill(9)) == [
        "the last point-in-time drill (20250324T120000Z-ab12) is 9.0 days old; the policy "
        "allows 8.0"
    ]
    # A failed drill blocks however recent it is; every reason is listed at once.
    assert len(guard(archiving_problem=failing, last_backup=None, last_drill=failed)) == 3


def test_drill_metrics_and_records() -> None:
    passed = drill(
        0, rto_s=312.5, rpo_s=41.0, rto_objective_s=900.0, rpo_objective_s=600.0, unknown="x"
    )
    assert drill_metrics(passed) == {
        "socialnet_pitr_drill_success": 1.0,
        "socialnet_pitr_drill_last_run_timestamp_seconds": NOW.timestamp(),
        "socialnet_pitr_drill_rto_seconds": 312.5,
        "socialnet_pitr_drill_rpo_seconds": 41.0,
        "socialnet_pitr_drill_rto_objective_seconds": 900.0,
        "socialnet_pitr_drill_rpo_objective_seconds": 600.0,
    }
    # A drill that failed before measuring anything reports failure and when, nothing made up.
    assert drill_metrics(drill(0, passed=False, problem="boom")) == {
        "socialnet_pitr_drill_success": 0.0,
        "socialnet_pitr_drill_last_run_timestamp_seconds": NOW.timestamp(),
    }
    assert passed.key() == "drills/production/20250324T120000Z-ab12.json"
    stored = passed.model_dump(mode="json")
    assert stored["finished_at"] == "2025-03-25T12:00:00Z" and "unknown" not in stored
    assert DrillRecord.model_validate(stored) == passed


# --- the policy ------------------------------------------------------------------------------------

SHIPPED = yaml.safe_load((environments_dir() / "production.yaml").read_text())


def with_physical(tmp_path: Path, physical: dict[str, Any]) -> Path:
    document = copy.deepcopy(SHIPPED)
    document["backup"]["physical"] = physical
    (tmp_path / "production.yaml").write_text(yaml.safe_dump(document))
    return tmp_path


def test_the_physical_policy_loads_with_durations(tmp_path: Path) -> None:
    folder = with_physical(
        tmp_path, {"full_every": "7d", "diff_every": "1d", "recovery_window": "14d", "keep_full": 3}
    )
    environment = load_environment("production", folder)
    assert environment.backup is not None
    policy = environment.backup.physical
    assert (policy.full_every, policy.diff_every) == (7 * DAY, DAY)
    assert (policy.keep_full, policy.recovery_window) == (3, 14 * DAY)
    # Absent: the defaults (weekly full, daily differential, two fulls, a 14-day window).
    assert load_environment("production").backup.physical == PhysicalBackupPolicy()  # type: ignore[union-attr]


def test_a_differential_rarer_than_the_full_is_refused(tmp_path: Path) -> None:
    folder = with_physical(tmp_path, {"full_every": "1d", "diff_every": "2d"})
    with pytest.raises(EnvironmentError) as raised:
        load_environment("production", folder)
    message = str(raised.value)
    assert message.startswith(f"{folder / 'production.yaml'}: ")
    assert "backup.physical" in message
    assert "diff_every is longer than full_every: no differential would run" in message
    with pytest.raises(ValidationError, match="diff_every is longer than full_every"):
        PhysicalBackupPolicy(full_every=3600, diff_every=7200)
    assert PhysicalBackupPolicy(full_every=3600, diff_every=3600).diff_every == 3600
