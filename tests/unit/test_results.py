"""Typed flow results: the one line a person reads, the event automations match, the report."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from socialnet_ops.core.results import (
    CanaryResult,
    ConfigureResult,
    DriftResult,
    ProvisionResult,
    RotateResult,
    SecretsResult,
    StackDrift,
)

pytestmark = pytest.mark.unit

OUTPUTS = {"nodes": [{"name": "cp-0"}, {"name": "worker-1"}], "backup_bucket": "b", "dns_zone": "z"}
COUNTS = {"create": 2, "update": 1, "replace": 0, "delete": 0}


def provision(**changes: Any) -> ProvisionResult:
    fields: dict[str, Any] = {
        "environment": "local",
        "status": "changes",
        "plan": [{"address": "aws_vpc.this", "action": "create", "attributes": ""}],
        "changes": COUNTS,
        "outputs": OUTPUTS,
        "seconds": {"plan": 1.0},
    }
    return ProvisionResult(**{**fields, **changes})


def canary(**changes: Any) -> CanaryResult:
    fields: dict[str, Any] = {
        "environment": "local",
        "version": "v3",
        "stable": "v2",
        "outcome": "aborted",
        "reason": "error ratio 30% above the policy's 5.0%",
        "step": 2,
        "step_title": "step 2: analysis",
        "weight": 25,
        "measurements": 1,
        "verdicts": {"fail": 1},
        "migrations": [],
        "predeploy_backup": "none",
        "seconds": {"steps": 12.5},
        "started_at": 1.0,
        "ended_at": 2.0,
        "slot_taken_at": 1.0,
        "slot_released_at": 2.0,
    }
    return CanaryResult(**{**fields, **changes})


def test_an_applied_provision_announces_infra_applied_with_its_payload() -> None:
    result = provision()
    event = result.event()
    assert event is not None and event.name == "infra.applied"
    assert event.payload == {"changes": COUNTS, "nodes": 2, "backup_bucket": "b", "dns_zone": "z"}
    assert result.summary().startswith(
        "terraform: changes (2 to add, 1 to change, 0 to replace, 0 to destroy)"
    )
    assert result.report() is None  # the plan artifact is the flow's own


def test_a_plan_only_provision_announces_nothing_and_says_so() -> None:
    result = provision(outputs=None)
    assert result.event() is None
    assert result.summary() == (
        "terraform: changes (2 to add, 1 to change, 0 to replace, 0 to destroy) on local, "
        "planned only, not applied"
    )
    assert provision(status="clean", changes={}, plan=[]).summary() == (
        "terraform: clean on local, applied"
    )


def test_drift_summarises_every_stack() -> None:
    result = DriftResult(
        environment="local, staging",
        stacks={
            "local": StackDrift(status="clean"),
            "staging": StackDrift(status="drifted", addresses=["a", "b"], detail="2 to change"),
        },
    )
    assert result.summary() == "drift: local clean; staging drifted (2 address(es))"
    assert result.event() is None  # each drifted stack has its own `infra.drift`


def test_configure_event_names_each_host_status_and_the_mode() -> None:
    hosts = {
        "cp-0": {"changed": 3, "status": "changed"},
        "worker-1": {"changed": 0, "status": "ok"},
    }
    result = ConfigureResult(environment="local", check=False, hosts=hosts, changed=3, seconds={})
    event = result.event()
    assert event.name == "nodes.configured"
    assert event.payload == {"hosts": {"cp-0": "changed", "worker-1": "ok"}, "changed": 3}
    assert result.summary() == "configured local: 2 host(s), 3 changed (cp-0, worker-1)"
    checked = result.model_copy(update={"check": True})
    assert checked.event().name == "nodes.checked"
    assert "2 host(s), 3 changed" in checked.summary()


def test_secrets_counts_changes_and_never_holds_a_value() -> None:
    result = SecretsResult(
        environment="local",
        layout=[{"item": "mount socialnet", "action": "unchanged"}],
        secrets=[
            {"item": "socialnet/local/api", "action": "replaced"},
            {"item": "socialnet/local/database", "action": "kept"},
        ],
        installed="0600 files under /state/secrets",
    )
    assert result.event().model_dump() == {
        "name": "secrets.bootstrapped",
        "payload": {"changes": 1},
    }
    assert result.summary() == (
        "secrets of local: 1 changed, 1 kept, 0 layout change(s); "
        "installed: 0600 files under /state/secrets"
    )


def test_rotate_reports_logins_and_keeps_the_event_flags() -> None:
    result = RotateResult(
        environment="local",
        database={"from": "socialnet_a", "to": "socialnet_b", "version": 2, "resumed": False},
        revoked=["socialnet_a"],
        token_key=True,
        end_overlap=False,
        token_key_version=3,
        seconds={"vault": 0.5, "install": 1.5},
    )
    assert result.event().payload == {"database": True, "token_key": True, "end_overlap": False}
    report = result.report()
    assert report.key == "rotate-local"
    assert report.sections == {
        "database": "login socialnet_a -> socialnet_b, revoked: socialnet_a",
        "token key": "rotated, previous key accepted until the overlap ends",
        "timings": ["vault: 0.5 s", "install: 1.5 s"],
    }
    ended = RotateResult(environment="local", token_key=False, end_overlap=True, seconds={})
    assert ended.event().payload == {"database": False, "token_key": False, "end_overlap": True}
    assert ended.report().sections["database"] == "unchanged"
    assert ended.report().sections["token key"] == "overlap ended"


def test_an_aborted_canary_has_its_rollback_report_and_event() -> None:
    result = canary()
    assert result.summary().startswith("aborted: error ratio 30% above the policy's 5.0%")
    event = result.event()
    assert event.name == "canary.aborted"
    assert event.payload == {
        "version": "v3",
        "stable": "v2",
        "step": "step 2: analysis",
        "weight": 25,
        "reason": "error ratio 30% above the policy's 5.0%",
    }
    report = result.report()
    assert report is not None and report.key == "canary-rollback-local"
    assert report.sections["where"] == "step 2: analysis at 25% of traffic"
    assert report.sections["measurements"] == ["fail: 1"]
    assert report.sections["timings"] == ["steps: 12.5 s"]
    # It travels inside CanaryAbortedError, which Prefect pickles.
    assert pickle.loads(pickle.dumps(result)) == result  # noqa: S301 (our own bytes)


def test_a_promoted_canary_announces_the_promotion_only() -> None:
    result = canary(outcome="promoted", reason="all 5 steps passed", step=None, step_title=None)
    assert result.report() is None
    event = result.event()
    assert (event.name, event.payload) == ("canary.promoted", {"version": "v3", "previous": "v2"})
    assert result.summary().startswith("promoted: all 5 steps passed")


def test_a_diff_groups_files_by_layer_and_says_what_changes() -> None:
    from socialnet_ops.core.results import DiffResult, paths_by_layer, text_diff

    changed = paths_by_layer(
        [
            "app/api/main.py",
            "app/api/migrations/versions/0005_x.py",
            "deployments/values/production.yaml",
            "infrastructure/terraform/modules/dns/main.tf",
            "README.md",
        ]
    )
    assert changed == {
        "app": ["app/api/main.py"],
        "migrations": ["app/api/migrations/versions/0005_x.py"],
        "values": ["deployments/values/production.yaml"],
        "terraform": ["infrastructure/terraform/modules/dns/main.tf"],
        "other": ["README.md"],
    }
    values = text_diff("replicas: 2\n", "replicas: 3\n", "production.yaml")
    assert "-replicas: 2" in values and "+replicas: 3" in values
    result = DiffResult(
        environment="production",
        ref="v1.2.0",
        commit="e" * 40,
        serving_version="v1.1.0",
        serving_commit="f" * 40,
        commits=["eeeeeee bump replicas"],
        changed=changed,
        values_diff=values,
        chart="unchanged (0.4.0)",
        migrations=["0005 add index"],
        secrets=["database: v2 -> v3"],
        terraform="not asked",
        ansible="not asked",
    )
    assert result.report().key == "diff-production"
    assert "1 commit(s)" in result.summary() and "1 migration(s) pending" in result.summary()
    assert "values changed" in result.summary()
