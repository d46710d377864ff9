"""Staging takes its chart and values from the released commit, and a rollback returns them.

The commits are pushed to a real git remote (tests/support/git_remote.py); helm installs the
chart of each commit's build on the Kubernetes API emulator.
"""

from __future__ import annotations

import hashlib
import uuid

import boto3
import pytest
import yaml

from flows.deploy import deploy
from flows.diff import diff
from flows.provision import provision
from flows.rollback import rollback
from socialnet_ops.core.results import FORWARD_ONLY
from tasks.ledger import load_ledger
from tests.integration.kubernetes.conftest import NAMESPACE, served
from tests.integration.terraform.conftest import require_terraform
from tests.support.git_remote import ProjectRepo
from tests.support.kube_edge import KubeEdge
from tests.support.kube_emulator import KubeEmulator

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VALUES = "deployments/values/staging.yaml"
MARKER = "socialnet.example/commit-marker"


def commit_values(project: ProjectRepo, marker: str) -> tuple[str, str]:
    """A commit whose staging values annotate the ingress with `marker`: (sha, values digest)."""
    values = yaml.safe_load((project.work / VALUES).read_text())
    values["ingress"]["annotations"][MARKER] = marker
    text = yaml.safe_dump(values, sort_keys=False)
    project.write(VALUES, text)
    project.write("app/api/gitops_marker.py", f'MARKER = "{marker}"\n')
    sha = project.commit(f"staging: {marker}")
    project.push("develop")
    return sha, hashlib.sha256(text.encode()).hexdigest()[:16]


def ingress_marker(kube: KubeEmulator) -> str | None:
    ingress = kube.get("networking.k8s.io/v1", "Ingress", NAMESPACE, "socialnet")
    assert ingress is not None, "the chart made no ingress named socialnet"
    return ingress["metadata"].get("annotations", {}).get(MARKER)


STACK_VARIABLES = "infrastructure/terraform/stacks/staging/variables.tf"


def test_a_push_to_develop_releases_that_commit_to_staging_in_every_layer(
    kube: KubeEmulator, staging: KubeEdge, project_source: ProjectRepo
) -> None:
    """The commit's Terraform (a variable changed) applied to the AWS emulator, then its app with
    its chart values on the cluster; the ledger's manifest pins all three to that commit."""
    require_terraform()
    run = uuid.uuid4().hex[:6]
    text = (project_source.work / STACK_VARIABLES).read_text()
    old = 'variable "admin_cidrs" {\n  type    = list(string)\n  default = null'
    assert old in text
    project_source.write(
        STACK_VARIABLES, text.replace(old, old.replace("null", '["10.20.0.0/16"]'))
    )
    sha, values = commit_values(project_source, f"every-layer-{run}")
    # The zone the stack's DNS record goes into exists before staging (the technical stack's);
    # the backup bucket the fixture made is the stack's to make.
    boto3.client("route53", region_name="eu-west-3").create_hosted_zone(
        Name="socialnet.example", CallerReference=f"gitops-{run}"
    )
    boto3.client("s3", region_name="eu-west-3").delete_bucket(Bucket="socialnet-backups-staging")
    # The develop rule's release, minus what needs staging's Vault and nodes (secrets and
    # configure, covered by the release tests): its provision stage, then its deploy stage.
    applied = provision(env="staging", ref=sha)
    assert applied.status == "changes"
    deployed = deploy(env="staging", version=f"gl-{run}", ref=sha)
    assert deployed.manifest is not None and deployed.manifest.commit == sha
    assert ingress_marker(kube) == f"every-layer-{run}" and served(staging) == {f"gl-{run}"}
    stable = load_ledger("staging").stable
    assert stable is not None and stable.manifest is not None
    manifest = stable.manifest
    assert (stable.git_sha, manifest.commit, manifest.values) == (sha, sha, values)
    assert manifest.terraform is not None and manifest.terraform.startswith("serial ")
    assert manifest.terraform.endswith(f"commit {sha[:12]}")  # the stack of that commit applied
    ec2 = boto3.client("ec2", region_name="eu-west-3")
    ingress = [
        cidr["CidrIp"]
        for group in ec2.describe_security_groups()["SecurityGroups"]
        for permission in group["IpPermissions"]
        for cidr in permission.get("IpRanges", [])
    ]
    assert "10.20.0.0/16" in ingress  # the variable of the commit, not of the checkout


def test_staging_runs_each_commits_chart_values_and_a_rollback_returns_them(
    kube: KubeEmulator, staging: KubeEdge, project_source: ProjectRepo
) -> None:
    run = uuid.uuid4().hex[:6]
    first_sha, first_values = commit_values(project_source, f"first-{run}")
    first = deploy(env="staging", version=f"ga-{run}", ref=first_sha)
    assert first.manifest is not None
    assert (first.manifest.commit, first.manifest.values) == (first_sha, first_values)
    assert ingress_marker(kube) == f"first-{run}"

    second_sha, second_values = commit_values(project_source, f"second-{run}")
    change = diff(env="staging", ref=second_sha, plan_infra=False, check_nodes=False)
    assert change.serving_version == f"ga-{run}" and change.commit == second_sha
    assert change.commits == [f"{second_sha[:7]} staging: second-{run}"]
    assert change.changed == {"app": ["app/api/gitops_marker.py"], "values": [VALUES]}
    assert f"-    {MARKER}: first-{run}" in change.values_diff
    assert f"+    {MARKER}: second-{run}" in change.values_diff
    assert change.chart.startswith("unchanged") and change.migrations == []
    assert change.terraform == "not asked" and change.report().key == "diff-staging"
    deploy(env="staging", version=f"gb-{run}", ref=second_sha)
    assert ingress_marker(kube) == f"second-{run}"
    assert served(staging) == {f"gb-{run}"}
    stable = load_ledger("staging").stable
    assert stable is not None and stable.manifest is not None
    assert stable.manifest.values == second_values and stable.manifest.chart
    assert stable.manifest.rendered and stable.manifest.rendered != first.manifest.rendered

    back = rollback(env="staging")
    assert back.version == f"ga-{run}"
    assert ingress_marker(kube) == f"first-{run}"  # the values came back with the app
    assert served(staging) == {f"ga-{run}"}
    assert back.manifest is not None and back.manifest.values == first_values
    assert first_values in back.returned() and first_sha[:12] in back.returned()
    report = back.report()
    assert report.sections["not rolled back"] == FORWARD_ONLY
    stable = load_ledger("staging").stable
    assert stable is not None and stable.manifest is not None
    assert (stable.manifest.commit, stable.manifest.values) == (first_sha, first_values)
