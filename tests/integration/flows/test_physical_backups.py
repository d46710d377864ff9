"""Physical backups on the real local platform, as `make demo` and the schedules run them: the
platform archives WAL through pgBackRest (config written with the cipher passphrase from its
OpenBao), HAProxy terminates TLS in front of the AWS emulator, the flows back up into two
buckets, record a marker, prove it with the point-in-time drill, and the platform's Prometheus
scrapes the drill's numbers from its Pushgateway."""

from __future__ import annotations

import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from flows.backup import backup_marker, base_backup
from flows.restore import drill_directory, pitr_drill
from socialnet_ops.core.backups import DatabaseAccess
from socialnet_ops.core.environments import PhysicalBackupPolicy, load_environment
from socialnet_ops.platforms import backup_target_for
from socialnet_ops.platforms.local import LocalPlatform
from tasks.physical_backups import backup_guard_problems
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def test_base_backup_marker_and_drill_on_the_platform(local_platform: LocalPlatform) -> None:
    extra = local_platform.endpoints().extra
    config = Path(extra["state_dir"]) / "pgbackrest" / "pgbackrest.conf"
    # The passphrase lives in a file only PostgreSQL's user reads.
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert config.owner() == "postgres"
    access = DatabaseAccess.from_socialnet_env(local_platform.database_env())
    with psycopg.connect(**access.connect_kwargs(), autocommit=True) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS drill_probe (id int PRIMARY KEY)")
        connection.execute("INSERT INTO drill_probe SELECT g FROM generate_series(1, 500) g")

    full = base_backup(env="local")
    assert full.backup_type == "full" and set(full.repositories) == {"repo1", "repo2"}
    marker = backup_marker(env="local")
    with psycopg.connect(**access.connect_kwargs(), autocommit=True) as connection:
        connection.execute("DELETE FROM drill_probe WHERE id > 100")  # after the marker

    drill = pitr_drill(env="local")
    assert drill.marker_time == marker.taken_at
    assert (drill.rows, drill.checksum) == (marker.rows, marker.checksum) and drill.rows >= 500
    assert drill.rto_s > 0 and drill.rpo_s >= 0 and drill.verified_repositories == [1, 2]

    def scraped() -> bool:
        answer = httpx.get(
            f"{local_platform.endpoints().prometheus_url}/api/v1/query",
            params={"query": 'socialnet_pitr_drill_success{environment="local"}'},
            timeout=5,
        ).json()
        return [item["value"][1] for item in answer["data"]["result"]] == ["1"]

    wait_for(scraped, timeout_s=30, what="the drill's success scraped by the platform's Prometheus")

    # The release guard: healthy now; a policy that wants a backup of the last second refuses.
    target = backup_target_for(load_environment("local"))
    policy = PhysicalBackupPolicy()
    assert backup_guard_problems(target, policy) == []
    strict = PhysicalBackupPolicy(max_backup_age=1, max_drill_age=86400)
    time.sleep(1.5)
    (problem,) = backup_guard_problems(target, strict)
    assert problem.startswith(f"the last physical backup ({full.backup_label}) is")


@pytest.fixture(autouse=True)
def no_drill_left_behind() -> Iterator[None]:
    yield
    shutil.rmtree(drill_directory("local"), ignore_errors=True)
