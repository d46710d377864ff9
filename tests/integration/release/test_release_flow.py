"""The release flow across a staging and a production local platform: stages, gate, undo.

Each test runs the real subflows (secrets from OpenBao, builds, migrations, replicas behind
HAProxy, a canary judged from Prometheus, pg_dump to the AWS emulator) and checks what serves
afterwards, the ledgers, the report and the events.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from flows.deploy import deploy
from flows.release import release
from socialnet_ops.adapters.postgres import count_rows
from socialnet_ops.core.environments import load_environment
from socialnet_ops.platforms import backup_target_for
from socialnet_ops.platforms.local import LocalPlatform
from tasks.ledger import load_ledger
from tasks.undo import ReleaseUndoneError
from tests.integration.canary.traffic import UserTraffic
from tests.integration.release.conftest import PRODUCTION, STAGING, Lifecycle, version
from tests.support.prefect import socialnet_events

pytestmark = pytest.mark.integration

V1, V2, BAD, BROKEN_MIGRATION = (version(name) for name in ("v1", "v2", "bad", "migration"))
SKIP_SLOW_STAGES: dict[str, Any] = {"provision_infra": False, "configure_nodes": False}


def served(platform: LocalPlatform, probes: int = 12) -> set[str]:
    with httpx.Client(base_url=platform.endpoints().edge_url, timeout=5) as client:
        return {client.get("/version").json()["version"] for _ in range(probes)}


def release_table(environment: str) -> list[dict[str, Any]]:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"release-{environment}"])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    assert artifacts, "the release left no report"
    data = artifacts[0].data
    return json.loads(data) if isinstance(data, str) else data  # type: ignore[return-value]


def ensure_first_release(lifecycle: Lifecycle) -> None:
    if load_ledger(PRODUCTION).stable is None:
        release(env=PRODUCTION, version=V1, **SKIP_SLOW_STAGES)


def test_first_release_deploys_staging_then_production_and_backs_up(lifecycle: Lifecycle) -> None:
    since = datetime.now(UTC)
    result = release(env=PRODUCTION, version=V1, **SKIP_SLOW_STAGES)

    assert result.source == STAGING
    assert result.stages == {
        f"provision {STAGING}": "skipped",
        f"provision {PRODUCTION}": "skipped",
        f"configure {STAGING}": "skipped",
        f"configure {PRODUCTION}": "skipped",
        f"secrets {STAGING}": "ok",
        f"secrets {PRODUCTION}": "ok",
        f"restore point {STAGING}": "ok",
        f"deploy {STAGING}": "ok",
        f"verify {STAGING}": "ok",
        "promotion gate": "ok",
        f"restore point {PRODUCTION}": "ok",
        # Nothing served production to compare a canary with: its first release is a deploy.
        f"deploy {PRODUCTION}": "ok",
        f"verify {PRODUCTION}": "ok",
        f"backup {PRODUCTION}": "ok",
    }
    assert served(lifecycle.staging) == {V1} and served(lifecycle.production) == {V1}
    stable_staging, stable_production = load_ledger(STAGING).stable, load_ledger(PRODUCTION).stable
    assert stable_staging and stable_production
    assert stable_production.git_sha == stable_staging.git_sha  # the very build staging verified
    backup = load_ledger(PRODUCTION).last_backup
    assert backup and backup.get("release") == V1
    rows = release_table(PRODUCTION)
    assert [row["stage"] for row in rows][-1] == f"backup {PRODUCTION}"
    completed = socialnet_events("release.completed", since)
    assert [event["payload"]["version"] for event in completed] == [V1]


def test_a_rerun_of_a_finished_release_changes_nothing(lifecycle: Lifecycle) -> None:
    ensure_first_release(lifecycle)
    history_before = load_ledger(PRODUCTION).model_dump(exclude={"last_backup"})
    result = release(env=PRODUCTION, version=V1, take_backup=False, **SKIP_SLOW_STAGES)
    rows = {row["stage"]: row for row in result.rows}
    assert rows[f"release {STAGING}"]["detail"] == f"{STAGING} already serves {V1}"
    assert rows[f"release {PRODUCTION}"]["detail"] == f"{PRODUCTION} already serves {V1}"
    assert load_ledger(PRODUCTION).model_dump(exclude={"last_backup"}) == history_before
    assert served(lifecycle.production) == {V1}


def test_a_healthy_version_reaches_production_by_canary(lifecycle: Lifecycle) -> None:
    ensure_first_release(lifecycle)
    with UserTraffic(lifecycle.production.endpoints().edge_url, rate=25, max_seconds=240) as users:
        result = release(env=PRODUCTION, version=V2, take_backup=False, **SKIP_SLOW_STAGES)
    assert result.stages[f"canary {PRODUCTION}"] == "ok"
    assert served(lifecycle.staging) == {V2} and served(lifecycle.production) == {V2}
    assert users.report.failed() == 0
    assert load_ledger(PRODUCTION).stable.version == V2  # type: ignore[union-attr]


def test_a_failed_canary_leaves_production_and_undoes_the_staging_release(
    lifecycle: Lifecycle,
) -> None:
    ensure_first_release(lifecycle)
    staging_before = load_ledger(STAGING).stable
    production_before = load_ledger(PRODUCTION).stable
    assert staging_before and production_before
    since = datetime.now(UTC)
    with (
        UserTraffic(lifecycle.production.endpoints().edge_url, rate=25, max_seconds=240),
        pytest.raises(ReleaseUndoneError) as undone,
    ):
        release(
            env=PRODUCTION,
            version=BAD,
            settings={"SOCIALNET_FAULT_ERROR_RATE": "0.3"},
            take_backup=False,
            **SKIP_SLOW_STAGES,
        )
    message = str(undone.value)
    assert "CanaryAbortedError" in message or "aborted" in message
    assert f"{STAGING}: {BAD} rolled back to {staging_before.version}: undone" in message
    # Production never stopped serving its stable release; staging is back where it was.
    assert served(lifecycle.production) == {production_before.version}
    assert served(lifecycle.staging) == {staging_before.version}
    assert load_ledger(PRODUCTION).stable == production_before
    assert load_ledger(STAGING).stable.version == staging_before.version  # type: ignore[union-attr]
    rows = release_table(PRODUCTION)
    assert {
        "stage": "undo",
        "result": f"{STAGING}: {BAD} rolled back to {staging_before.version}: undone",
    }.items() <= rows[-1].items()
    events = socialnet_events("release.undone", since)
    assert [event["payload"]["version"] for event in events] == [BAD]
    # Undone completely: the rollback automation has nothing to do, so no release.failed.
    assert not [
        event
        for event in socialnet_events("release.failed", since, settle_s=1)
        if event["payload"].get("flow") == "release"
    ]


def _database(environment: str) -> tuple[dict[str, int], list[str]]:
    access = backup_target_for(load_environment(environment)).database
    with psycopg.connect(**access.connect_kwargs(access.database)) as connection:
        counts = count_rows(connection)
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        ]
    return counts, tables


def test_a_failed_migration_restores_the_predeploy_backup(lifecycle: Lifecycle) -> None:
    ensure_first_release(lifecycle)
    serving_before = served(lifecycle.staging)
    counts_before, tables_before = _database(STAGING)
    since = datetime.now(UTC)
    with pytest.raises(ReleaseUndoneError) as undone:
        deploy(
            env=STAGING,
            version=BROKEN_MIGRATION,
            settings={"SOCIALNET_FAULT_MIGRATION": "half-applied"},
        )
    assert "pre-deploy backup" in str(undone.value) and "restored: undone" in str(undone.value)
    counts_after, tables_after = _database(STAGING)
    assert "fault_half_applied_migration" not in tables_after  # the half-applied change is gone
    assert (counts_after, sorted(tables_after)) == (counts_before, sorted(tables_before))
    assert served(lifecycle.staging) == serving_before  # the app kept serving
    assert load_ledger(STAGING).stable.version in serving_before  # type: ignore[union-attr]
    events = socialnet_events("release.undone", since)
    assert [event["payload"]["version"] for event in events] == [BROKEN_MIGRATION]
