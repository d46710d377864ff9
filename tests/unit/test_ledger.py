from __future__ import annotations

import pytest

from socialnet_ops.core.ledger import HISTORY_LIMIT, CanaryRecord, Ledger, ReleaseRecord

pytestmark = pytest.mark.unit


def release(version: str) -> ReleaseRecord:
    return ReleaseRecord(version=version, git_sha=f"sha-{version}", ref="main", strategy="rolling")


def test_a_new_stable_pushes_the_old_one_into_history_and_clears_the_canary() -> None:
    ledger = Ledger(environment="local").with_stable(release("v1"))
    ledger = ledger.with_canary(CanaryRecord(version="v2", weight=10)).with_stable(release("v2"))
    assert ledger.stable is not None and ledger.stable.version == "v2"
    assert [record.version for record in ledger.history] == ["v1"]
    assert ledger.canary is None


def test_previous_skips_entries_of_the_release_serving_now() -> None:
    ledger = Ledger(environment="local")
    for version in ("v1", "v2", "v1"):  # v1, then v2, then back to v1
        ledger = ledger.with_stable(release(version))
    previous = ledger.previous()
    assert previous is not None and previous.version == "v2"
    assert Ledger(environment="local").previous() is None


def test_history_is_bounded_so_the_ledger_fits_a_prefect_variable() -> None:
    ledger = Ledger(environment="production")
    for number in range(HISTORY_LIMIT + 10):
        ledger = ledger.with_stable(release(f"v{number}"))
    assert len(ledger.history) == HISTORY_LIMIT
    assert len(ledger.model_dump_json()) < 5000
    assert ledger.find("v0") is None and ledger.find(f"v{HISTORY_LIMIT + 9}") is not None


def test_the_ledger_survives_a_json_round_trip() -> None:
    ledger = Ledger(environment="local").with_stable(release("v1")).with_stable(release("v2"))
    assert Ledger.model_validate(ledger.model_dump(mode="json")) == ledger


def test_the_ledger_keeps_manifests_of_the_newest_releases_only() -> None:
    from socialnet_ops.core.ledger import MANIFESTS_KEPT, ReleaseManifest

    ledger = Ledger(environment="production")
    for number in range(HISTORY_LIMIT + 3):
        sha = f"{number:040d}"
        manifest = ReleaseManifest(
            commit=sha,
            source="https://gitlab.example.com/socialnet/socialnet.git",
            app="a" * 16,
            chart="0.4.0@" + "b" * 16,
            values="c" * 16,
            rendered="d" * 16,
            terraform=f"serial 120, code {'e' * 16}, commit {sha[:12]}",
            ansible_roles="f" * 16,
            alembic_head="0004_follow_index",
            secrets={"database": 12, "api": 7, "webhooks": 1},
            backup_id="20261207T040000Z-ab12",
        )
        record = ReleaseRecord(
            version=f"develop-{sha[:8]}",
            git_sha=sha,
            ref=sha,
            strategy="canary",
            flow_run_id="0b5e4f3c-7d2a-4b8e-9c1f-2a3b4c5d6e7f",
            backup_id="20261207T040000Z-ab12",
            manifest=manifest,
        )
        ledger = ledger.with_stable(record)
    assert ledger.stable is not None and ledger.stable.manifest is not None
    kept = [item.manifest is not None for item in ledger.history]
    assert kept == [True] * MANIFESTS_KEPT + [False] * (len(ledger.history) - MANIFESTS_KEPT)
    # What a Prefect Variable holds (5,000 characters), with the whole history.
    assert len(ledger.model_dump_json(exclude_none=True)) < 5000


def test_a_manifest_names_every_layer_of_a_release() -> None:
    from socialnet_ops.core.ledger import release_manifest

    manifest = release_manifest(
        "c" * 40,
        "https://gitlab.example.com/socialnet/socialnet.git",
        {"app": "1" * 16, "chart": "0.4.0@" + "2" * 16, "values:staging.yaml": "3" * 16},
        "deployments/values/staging.yaml",
        {"serial": 7, "stack_digest": "4" * 16, "commit": "d" * 40},
        {"database": 2},
        "20261207T040000Z-ab12",
        rendered="5" * 16,
    )
    assert manifest.values == "3" * 16 and manifest.rendered == "5" * 16
    assert manifest.terraform == f"serial 7, code {'4' * 16}, commit {'d' * 12}"
    rows = dict(manifest.rows())
    assert rows["secrets"] == "database v2" and rows["ansible_roles"] == "-"
    assert rows["backup_id"] == "20261207T040000Z-ab12"
