"""The repository's policies (infrastructure/policies/*.rego) on plan JSON, through the in-process
Rego engine: the `local` stack's own plan passes, and each rule catches what it is for.

`data/local-plan.json` is `terraform show -json` of a plan creating the `local` stack (against the
AWS emulator), trimmed to the fields the rules read.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from socialnet_ops.adapters.policies import PolicyError, evaluate, read_policies
from socialnet_ops.core.paths import repo_root

pytestmark = pytest.mark.unit

PLAN = json.loads((Path(__file__).parent / "data" / "local-plan.json").read_text())
RULES = read_policies(repo_root())
TAGS = {"Project": "socialnet", "Environment": "local", "ManagedBy": "terraform"}


def resource(
    address: str, kind: str, after: dict[str, Any] | None, actions: tuple[str, ...] = ("create",)
) -> dict[str, Any]:
    return {
        "address": address,
        "mode": "managed",
        "type": kind,
        "name": address.rsplit(".", 1)[-1],
        "change": {"actions": list(actions), "after": after},
    }


def plan_with(*resources: dict[str, Any]) -> dict[str, Any]:
    plan = copy.deepcopy(PLAN)
    plan["resource_changes"] += list(resources)
    return plan


def findings(plan: dict[str, Any]) -> list[str]:
    return evaluate(plan, RULES, "test").lines()


def test_the_local_stacks_plan_passes_every_rule_set() -> None:
    verdict = evaluate(PLAN, RULES, "infrastructure/policies at test")
    assert verdict.rules == ["encryption", "public_buckets", "ssh_ingress", "tags"]
    assert verdict.passed, verdict.lines()
    assert verdict.summary().startswith("4 rule sets passed")


def ssh_group(cidrs: list[str], protocol: str = "tcp", ports: tuple[int, int] = (22, 22)) -> Any:
    rule = {"protocol": protocol, "from_port": ports[0], "to_port": ports[1]}
    return resource(
        "aws_security_group.debug",
        "aws_security_group",
        {"ingress": [{**rule, "cidr_blocks": cidrs, "ipv6_cidr_blocks": []}], "tags_all": TAGS},
    )


@pytest.mark.parametrize(
    ("group", "found"),
    [
        (ssh_group(["0.0.0.0/0"]), True),
        (ssh_group(["0.0.0.0/0"], ports=(0, 65535)), True),
        (ssh_group(["0.0.0.0/0"], protocol="-1", ports=(0, 0)), True),
        (ssh_group(["10.0.0.0/8"]), False),
        (ssh_group(["0.0.0.0/0"], ports=(443, 443)), False),
    ],
)
def test_ssh_from_the_whole_internet_is_denied(group: dict[str, Any], found: bool) -> None:
    lines = [line for line in findings(plan_with(group)) if line.startswith("ssh_ingress")]
    assert bool(lines) is found, lines


def test_standalone_ssh_rules_are_denied_too() -> None:
    rule = resource(
        "aws_security_group_rule.ssh",
        "aws_security_group_rule",
        {"type": "ingress", "protocol": "tcp", "from_port": 22, "to_port": 22,
         "cidr_blocks": [], "ipv6_cidr_blocks": ["::/0"]},
    )  # fmt: skip
    vpc_rule = resource(
        "aws_vpc_security_group_ingress_rule.ssh",
        "aws_vpc_security_group_ingress_rule",
        {"cidr_ipv4": "0.0.0.0/0", "ip_protocol": "tcp", "from_port": 22, "to_port": 22,
         "tags_all": TAGS},
    )  # fmt: skip
    assert [line.split(":")[1].strip() for line in findings(plan_with(rule, vpc_rule))] == [
        "aws_security_group_rule.ssh",
        "aws_vpc_security_group_ingress_rule.ssh",
    ]


def test_a_public_unencrypted_bucket_is_denied_on_every_count() -> None:
    bucket = resource("aws_s3_bucket.exports", "aws_s3_bucket", {"bucket": "x", "tags_all": TAGS})
    acl = resource("aws_s3_bucket_acl.exports", "aws_s3_bucket_acl", {"acl": "public-read"})
    assert findings(plan_with(bucket, acl)) == [
        "encryption: aws_s3_bucket.exports: no aws_s3_bucket_server_side_encryption_configuration "
        "encrypts it",
        "public_buckets: aws_s3_bucket.exports: no aws_s3_bucket_public_access_block blocks its "
        "public access",
        "public_buckets: aws_s3_bucket_acl.exports: the ACL public-read makes the bucket public",
    ]


def test_turning_off_the_public_access_block_or_a_policy_for_everyone_is_denied() -> None:
    plan = copy.deepcopy(PLAN)
    [block] = [r for r in plan["resource_changes"] if r["type"].endswith("public_access_block")]
    block["change"]["after"]["restrict_public_buckets"] = False
    policy = resource(
        "aws_s3_bucket_policy.open",
        "aws_s3_bucket_policy",
        {"policy": json.dumps({"Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"},
                                               "Action": "s3:GetObject", "Resource": "*"}]})},
    )  # fmt: skip
    plan["resource_changes"].append(policy)
    assert [line.split(": ", 2)[2] for line in findings(plan)] == [
        "the bucket policy allows everyone (Principal *) without a condition",
        "restrict_public_buckets is off: public access is not blocked",
    ]


def test_unencrypted_volumes_are_denied() -> None:
    plan = copy.deepcopy(PLAN)
    node = next(r for r in plan["resource_changes"] if r["type"] == "aws_instance")
    node["change"]["after"]["root_block_device"][0]["encrypted"] = False
    volume = resource(
        "aws_ebs_volume.data", "aws_ebs_volume", {"encrypted": False, "tags_all": TAGS}
    )
    plan["resource_changes"].append(volume)
    assert findings(plan) == [
        "encryption: aws_ebs_volume.data: the volume is not encrypted",
        f"encryption: {node['address']}: root_block_device is not encrypted",
    ]


def test_a_resource_without_the_required_tags_is_denied_but_deleted_ones_are_not_judged() -> None:
    untagged = resource("aws_vpc.other", "aws_vpc", {"tags_all": {"Project": "socialnet"}})
    gone = resource("aws_vpc.gone", "aws_vpc", None, actions=("delete",))
    assert findings(plan_with(untagged, gone)) == [
        f"tags: aws_vpc.other: required tag {tag} is missing (set it in the provider's "
        "default_tags)"
        for tag in ("Environment", "ManagedBy")
    ]


def test_broken_or_missing_rules_are_one_line_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as raised:
        evaluate(
            PLAN,
            {"bad.rego": "package socialnet.terraform.bad\n\ndeny contains x if {\n  x :=\n}\n"},
            "t",
        )
    message = str(raised.value)
    assert message.startswith("infrastructure/policies/bad.rego:") and "not valid Rego" in message
    assert len(message.splitlines()) == 1
    with pytest.raises(PolicyError, match="no Rego rules"):
        read_policies(tmp_path)
    with pytest.raises(PolicyError, match="no rule set defines `deny`"):
        evaluate(PLAN, {"x.rego": "package other\n\nallow := true\n"}, "t")
