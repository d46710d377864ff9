"""Terraform logic without Terraform: settings, variables, plan summaries, lock holders, outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from socialnet_ops.adapters.terraform import (
    MIRROR_SETTING,
    Workspace,
    backend_arguments,
    declared_variables,
    init_fingerprint,
    provider_mirror,
    render_cli_config,
    sync_code,
)
from socialnet_ops.core.environments import load_environment
from socialnet_ops.core.paths import repo_root
from socialnet_ops.core.terraform import (
    SHARED_STATE_LIMIT,
    LockInfo,
    ResourceChange,
    TerraformConfigError,
    TerraformError,
    infra_state,
    is_lock_error,
    needs_approval,
    parse_lock_holder,
    read_plan_event,
    retention_days,
    stack_variables,
    summarize_plan,
)

pytestmark = pytest.mark.unit

STACKS = repo_root() / "infrastructure" / "terraform" / "stacks"
SHARED_STACK = STACKS.parent / "modules" / "environment" / "stack"
ENVIRONMENT_STACKS = ("local", "staging", "production", "technical")


# --- settings ------------------------------------------------------------------------------------


def test_mirror_comes_from_the_setting(tmp_path: Path) -> None:
    (tmp_path / "registry.terraform.io").mkdir()
    assert provider_mirror({MIRROR_SETTING: str(tmp_path)}) == tmp_path
    assert provider_mirror({MIRROR_SETTING: "none"}) is None
    assert provider_mirror({MIRROR_SETTING: ""}) is None


def test_a_mirror_without_providers_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(TerraformConfigError, match=r"no registry\.terraform\.io folder"):
        provider_mirror({MIRROR_SETTING: str(tmp_path)})


def test_cli_config_points_at_the_mirror_or_leaves_the_registry() -> None:
    mirrored = render_cli_config(Path("/opt/tf plugins"))
    assert 'path    = "/opt/tf plugins"' in mirrored
    assert 'exclude = ["registry.terraform.io/*/*"]' in mirrored
    assert "provider_installation" not in render_cli_config(None)


def test_workspaces_live_under_the_state_dir_never_in_the_repo(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SOCIALNET_STATE_DIR", str(tmp_path))
    workspace = Workspace.of(load_environment("staging"), "drift")
    assert workspace.root == tmp_path / "staging" / "terraform" / "drift"
    assert workspace.stack_dir == workspace.code / "stacks" / "staging"
    for path in (workspace.data_dir, workspace.plan_file, workspace.cli_config):
        assert path.is_relative_to(tmp_path)


def test_environment_stacks_are_the_shared_stack_plus_their_own_choices() -> None:
    shared = sorted(path.name for path in SHARED_STACK.glob("*.tf"))
    assert {"versions.tf", "main.tf", "moved.tf"} <= set(shared)
    for stack in ENVIRONMENT_STACKS:
        folder = STACKS / stack
        assert sorted(path.name for path in folder.glob("*.tf")) == sorted(
            [*shared, "environment.tf"]
        ), stack
        for name in shared:
            link = folder / name
            # A copy would drift from the others: the shared part is changed once, in stack/.
            assert link.is_symlink(), f"{stack}/{name} is not a link to {SHARED_STACK / name}"
            assert link.resolve() == (SHARED_STACK / name).resolve()


def test_the_workspace_copy_follows_the_links(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SOCIALNET_STATE_DIR", str(tmp_path))
    workspace = Workspace.of(load_environment("technical"), "plan")
    sync_code(workspace)
    main = workspace.stack_dir / "main.tf"
    assert not main.is_symlink() and main.read_text() == (SHARED_STACK / "main.tf").read_text()
    assert "create_zone = false" in (workspace.stack_dir / "environment.tf").read_text()


def test_init_is_needed_again_only_when_what_it_depends_on_changes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SOCIALNET_STATE_DIR", str(tmp_path))
    workspace = Workspace.of(load_environment("staging"), "drift")
    sync_code(workspace)
    workspace.cli_config.write_text(render_cli_config(Path("/opt/mirror")))
    backend = ["-backend-config=key=staging/terraform.tfstate"]
    first = init_fingerprint(workspace, "1.11.4", backend)

    (workspace.stack_dir / "socialnet.auto.tfvars.json").write_text('{"api_replicas": 5}')
    assert init_fingerprint(workspace, "1.11.4", backend) == first, "variables are not init's"
    assert init_fingerprint(workspace, "1.12.0", backend) != first
    assert init_fingerprint(workspace, "1.11.4", ["-backend-config=key=other"]) != first
    (workspace.stack_dir / ".terraform.lock.hcl").write_text('provider "x" {}')
    assert init_fingerprint(workspace, "1.11.4", backend) != first
    locked = init_fingerprint(workspace, "1.11.4", backend)
    workspace.cli_config.write_text(render_cli_config(None))
    assert init_fingerprint(workspace, "1.11.4", backend) != locked
    # What init made is gone: it has to run again whatever the fingerprint says.
    assert not workspace.is_initialized()


def test_backend_comes_from_the_catalog() -> None:
    production = load_environment("production")
    assert backend_arguments(production, emulated=False) == [
        "-backend-config=bucket=socialnet-tfstate",
        "-backend-config=key=production/terraform.tfstate",
        "-backend-config=region=eu-west-3",
    ]
    assert backend_arguments(production, emulated=True)[-1] == "-backend-config=use_path_style=true"


# --- variables -----------------------------------------------------------------------------------


def test_every_stack_declares_the_same_variables() -> None:
    names = {stack: declared_variables(STACKS / stack) for stack in ENVIRONMENT_STACKS}
    assert len({frozenset(found) for found in names.values()}) == 1
    assert {"environment", "node_count", "node_size", "backup_bucket"} <= names["production"]


def test_variables_come_from_the_catalog() -> None:
    production = load_environment("production")
    variables = stack_variables(
        production, declared_variables(STACKS / "production"), "production.yaml", emulated=False
    )
    assert variables == {
        "environment": "production",
        "region": "eu-west-3",
        "domain": "socialnet.example",
        "dns_zone": "socialnet.example",
        "node_count": 3,
        "node_size": "m5.large",
        "backup_bucket": "socialnet-backups-production",
        "backup_retention_days": 373,
        "s3_use_path_style": False,
    }


def test_an_environment_without_backups_gets_no_bucket() -> None:
    technical = load_environment("technical")
    assert retention_days(technical) is None
    variables = stack_variables(
        technical, declared_variables(STACKS / "technical"), "technical.yaml", emulated=True
    )
    assert "backup_bucket" not in variables and variables["s3_use_path_style"] is True


def test_an_unknown_variable_names_file_key_and_the_known_ones() -> None:
    staging = load_environment("staging").model_copy(deep=True)
    object.__setattr__(staging.terraform, "variables", {"node_cont": 3})
    with pytest.raises(TerraformConfigError) as raised:
        stack_variables(
            staging, declared_variables(STACKS / "staging"), "staging.yaml", emulated=False
        )
    message = str(raised.value)
    assert message.startswith("staging.yaml: terraform.variables.node_cont: not a variable of")
    assert "node_count" in message


# --- plans ---------------------------------------------------------------------------------------


def resource(
    address: str, actions: list[str], before: Any = None, after: Any = None
) -> dict[str, Any]:
    return {
        "address": address,
        "change": {"actions": actions, "before": before, "after": after, "after_unknown": {}},
    }


PLAN = {
    "format_version": "1.2",
    "resource_drift": [resource("module.network.aws_vpc.this", ["update"])],
    "resource_changes": [
        resource("module.nodes.aws_instance.node[1]", ["delete"]),
        resource(
            "module.nodes.aws_instance.node[0]",
            ["update"],
            {"instance_type": "t3.small", "tags": {"A": "1"}, "tags_all": {"A": "1"}, "ami": "x"},
            {"instance_type": "t3.large", "tags": {"A": "2"}, "tags_all": {"A": "2"}, "ami": "x"},
        ),
        resource("module.dns.aws_route53_record.environment", ["create"]),
        resource(
            "module.network.aws_subnet.nodes[0]",
            ["delete", "create"],
            {"cidr_block": "a"},
            {"cidr_block": "b"},
        ),
        resource("module.network.aws_vpc.this", ["no-op"]),
        resource("module.nodes.data.aws_ami.node[0]", ["read"]),
    ],
    "output_changes": {"nodes": {"actions": ["update"]}, "fqdn": {"actions": ["no-op"]}},
}


def test_a_plan_is_summarized_by_address_and_action() -> None:
    summary = summarize_plan(PLAN)
    assert summary.counts == {"create": 1, "update": 1, "replace": 1, "delete": 1}
    assert summary.headline() == "1 to add, 1 to change, 1 to replace, 1 to destroy"
    assert summary.rows() == [
        {
            "address": "module.dns.aws_route53_record.environment",
            "action": "create",
            "attributes": "",
        },
        {
            "address": "module.network.aws_subnet.nodes[0]",
            "action": "replace",
            "attributes": "cidr_block",
        },
        {
            "address": "module.nodes.aws_instance.node[0]",
            "action": "update",
            "attributes": "instance_type, tags",
        },
        {"address": "module.nodes.aws_instance.node[1]", "action": "delete", "attributes": ""},
    ]
    assert summary.output_changes == ("nodes",)


def test_drift_records_alone_are_not_changes() -> None:
    quiet = summarize_plan(
        {
            "resource_drift": PLAN["resource_drift"],
            "resource_changes": [
                resource("module.network.aws_vpc.this", ["no-op"]),
                resource("module.nodes.data.aws_ami.node[0]", ["read"]),
            ],
        }
    )
    assert not quiet.has_changes and quiet.rows() == []


def test_only_destroys_in_gated_environments_need_a_person() -> None:
    destroys = summarize_plan(PLAN)
    adds_only = summarize_plan({"resource_changes": [resource("a.b", ["create"])]})
    replaces = summarize_plan({"resource_changes": [resource("a.b", ["create", "delete"])]})
    assert needs_approval("production", destroys)
    assert needs_approval("production", replaces)
    assert not needs_approval("production", adds_only)
    assert not needs_approval("staging", destroys)
    assert needs_approval("staging", destroys, gated=["staging"])


# --- locks ---------------------------------------------------------------------------------------

LOCK_ERROR = """
╷
│ Error: Error acquiring the state lock
│
│ Error message: operation error S3: PutObject, https response error StatusCode: 412, api error PreconditionFailed
│ Lock Info:
│   ID:        6f1c2a7e-0000-4000-8000-000000000001
│   Path:      socialnet-tfstate/local/terraform.tfstate
│   Operation: OperationTypeApply
│   Who:       alice@laptop
│   Version:   1.11.4
│   Created:   2026-01-01 10:00:00 +0000 UTC
│   Info:
│
│ Terraform acquires a state lock to protect the state from being written
╵
""".splitlines()


def test_the_lock_holder_is_read_from_terraforms_report() -> None:
    assert is_lock_error(LOCK_ERROR)
    holder = parse_lock_holder(LOCK_ERROR)
    assert holder == LockInfo(
        id="6f1c2a7e-0000-4000-8000-000000000001",
        path="socialnet-tfstate/local/terraform.tfstate",
        operation="OperationTypeApply",
        who="alice@laptop",
        version="1.11.4",
        created="2026-01-01 10:00:00 +0000 UTC",
        info="",
    )
    assert holder.describe() == (
        "alice@laptop running apply since 2026-01-01 10:00:00 +0000 UTC "
        "(lock id 6f1c2a7e-0000-4000-8000-000000000001)"
    )
    assert parse_lock_holder(["Error: something else"]) is None


# --- outputs -------------------------------------------------------------------------------------


def outputs(**values: Any) -> dict[str, Any]:
    return {
        name: {"value": value, "type": "string", "sensitive": False}
        for name, value in values.items()
    }


def test_outputs_become_the_shared_state() -> None:
    nodes = [
        {
            "name": "socialnet-local-node-0",
            "role": "control_plane",
            "private_ip": "10.0.0.4",
            "public_ip": "",
        },
        {
            "name": "socialnet-local-node-1",
            "role": "workers",
            "private_ip": "10.0.1.4",
            "public_ip": None,
        },
    ]
    document = infra_state(
        "local",
        {
            **outputs(
                nodes=nodes,
                backup_bucket="b",
                dns_zone="socialnet.test",
                dns_zone_id="Z1",
                fqdn="local.socialnet.test",
                vpc_id="vpc-1",
            ),
            "secret": {"value": "hidden", "sensitive": True},
        },
        applied_at="2026-01-01T00:00:00+00:00",
        flow_run_id="run-1",
    ).to_json()
    assert document["nodes"][1]["public_ip"] == ""
    assert document["backup_bucket"] == "b" and document["dns_zone_id"] == "Z1"
    assert "hidden" not in json.dumps(document)


def test_outputs_too_large_for_a_variable_are_refused() -> None:
    nodes = [{"name": "n" * 100, "role": "workers", "private_ip": "10.0.0.1", "public_ip": ""}] * 60
    state = infra_state("big", outputs(nodes=nodes), "2026-01-01T00:00:00+00:00", None)
    with pytest.raises(TerraformError, match=f"above the {SHARED_STATE_LIMIT}"):
        state.to_json()


# --- streamed plans (drift) ----------------------------------------------------------------------


def test_a_streamed_plan_yields_log_text_and_planned_changes() -> None:
    planned = json.dumps(
        {
            "@message": "module.network.aws_vpc.this: Plan to update",
            "type": "planned_change",
            "change": {"resource": {"addr": "module.network.aws_vpc.this"}, "action": "update"},
        }
    )
    drift = json.dumps(
        {
            "@message": "module.network.aws_vpc.this: Drift detected (update)",
            "type": "resource_drift",
            "change": {"resource": {"addr": "module.network.aws_vpc.this"}, "action": "update"},
        }
    )
    locked = json.dumps(
        {
            "@message": "Error: Error acquiring the state lock",
            "type": "diagnostic",
            "diagnostic": {"severity": "error", "detail": "Lock Info:\n  ID:  abc\n  Who: bob@ci"},
        }
    )
    assert read_plan_event(planned)[1] == ResourceChange("module.network.aws_vpc.this", "update")
    assert read_plan_event(drift) == ("module.network.aws_vpc.this: Drift detected (update)", None)
    text, change = read_plan_event(locked)
    assert change is None and is_lock_error(text.splitlines())
    holder = parse_lock_holder(text.splitlines())
    assert holder is not None and (holder.id, holder.who) == ("abc", "bob@ci")
    assert read_plan_event("plain text") == ("plain text", None)
