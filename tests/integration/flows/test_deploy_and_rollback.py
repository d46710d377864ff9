"""deploy v1, deploy v2, roll back; failures leave what serves untouched; one release at a time."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from flows.deploy import deploy
from flows.restore import restore
from flows.rollback import NothingToRollBackError, rollback
from socialnet_ops.adapters.builds import BuildError
from socialnet_ops.adapters.source import SourceError
from socialnet_ops.core.environments import UnknownEnvironmentError
from socialnet_ops.platforms.local import LocalPlatform
from tasks.ledger import load_ledger
from tests.integration.flows.conftest import served_versions
from tests.support.prefect import socialnet_events

pytestmark = pytest.mark.integration


def ledger_versions() -> tuple[str | None, list[str]]:
    ledger = load_ledger("local")
    return (ledger.stable.version if ledger.stable else None), [r.version for r in ledger.history]


def test_deploy_v1_then_v2_then_roll_back_serves_each_in_turn(
    local_platform: LocalPlatform,
) -> None:
    first = deploy(env="local", version="v1")
    assert served_versions(local_platform) == {"v1"}
    assert first.previous is None

    second = deploy(env="local", version="v2")
    assert served_versions(local_platform) == {"v2"}
    assert second.previous == "v1"
    assert ledger_versions() == ("v2", ["v1"])

    back = rollback(env="local")
    assert back.previous == "v2" and back.version == "v1"
    assert served_versions(local_platform) == {"v1"}
    assert ledger_versions() == ("v1", ["v2", "v1"])
    # The app itself works behind the edge after all that: the database schema is migrated.
    status = local_platform.status()
    assert status.stable_version == "v1" and status.canary_version is None


def test_a_release_that_never_becomes_ready_leaves_the_serving_one(
    local_platform: LocalPlatform,
) -> None:
    serving_before = served_versions(local_platform)
    ledger_before = ledger_versions()
    # A misconfigured release: its replicas cannot reach the database, so /readyz stays 503.
    with pytest.raises(Exception, match="ready"):
        deploy(env="local", version="never-ready", settings={"SOCIALNET_DB_PORT": "1"})
    assert served_versions(local_platform) == serving_before
    assert ledger_versions() == ledger_before
    programs = [program.name for program in local_platform.status().programs]
    assert not [name for name in programs if "never-ready" in name]


def test_two_deploys_of_one_environment_run_one_after_the_other(
    local_platform: LocalPlatform,
) -> None:
    results: dict[str, Any] = {}

    def run(version: str) -> None:
        results[version] = deploy(env="local", version=version)

    threads = [threading.Thread(target=run, args=(version,)) for version in ("c1", "c2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert set(results) == {"c1", "c2"}
    first, second = sorted(results.values(), key=lambda result: result.slot_taken_at)
    assert first.slot_released_at <= second.slot_taken_at, "the two releases interleaved"
    assert served_versions(local_platform) == {second.version}


def test_bad_input_is_a_clear_error_before_anything_changes(local_platform: LocalPlatform) -> None:
    since = datetime.now(UTC)
    serving_before = served_versions(local_platform)
    ledger_before = ledger_versions()
    with pytest.raises(UnknownEnvironmentError, match="unknown environment 'moon'"):
        deploy(env="moon", version="v9")
    with pytest.raises(
        SourceError, match=r"git ref 'no-such-ref' is not in .* \(fetched just now\)"
    ):
        deploy(env="local", version="v9", ref="no-such-ref")
    with pytest.raises(BuildError, match="is not valid"):
        deploy(env="local", version="v9/../../etc")
    with pytest.raises(NothingToRollBackError, match="'v42' was never released to local"):
        rollback(env="local", version="v42")
    with pytest.raises(ValueError, match=r"settings\.SOCIALNET_DB_PASSWORD: only non-secret"):
        deploy(env="local", version="v9", settings={"SOCIALNET_DB_PASSWORD": "x"})
    # A time that is no time fails Prefect's parameter validation: the failure hook still runs
    # (it crashed with MissingContextError before) and says the run was rejected.
    failed = restore(env="local", point_in_time="yesterday", return_state=True)  # type: ignore[arg-type]
    assert failed.is_failed()
    assert served_versions(local_platform) == serving_before
    assert ledger_versions() == ledger_before
    # Each says "rejected": nothing changed, so no rollback or alert automation reacts.
    rejected = socialnet_events("release.rejected", since)
    assert {event["payload"]["environment"] for event in rejected} == {"moon", "local"}
    assert len(rejected) == 4
    assert len(socialnet_events("rollback.rejected", since, settle_s=1)) == 1
    [restore_rejected] = socialnet_events("restore.rejected", since, settle_s=1)
    assert "point_in_time" in restore_rejected["payload"]["reason"]
    assert socialnet_events("release.failed", since, settle_s=1) == []
