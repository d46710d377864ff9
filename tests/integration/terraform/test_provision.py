"""provision and drift on the `local` stack: real terraform, real AWS provider, moto server."""

from __future__ import annotations

import json
import stat
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run
from prefect.variables import Variable

from flows.drift import drift
from flows.provision import provision
from socialnet_ops.adapters.terraform import (
    restore_state_version,
    state_resources,
    state_versions,
)
from socialnet_ops.core.environments import UnknownEnvironmentError, load_environment
from socialnet_ops.core.merge_requests import ApplyRefusedError, PlanRefusedError, note_marker
from socialnet_ops.core.results import ProvisionResult
from socialnet_ops.core.stack_locks import lock_variable
from socialnet_ops.core.terraform import (
    ApplyRejectedError,
    MissingCredentialsError,
    StateLockedError,
    TerraformConfigError,
    TerraformError,
)
from tasks.stack_locks import read_lock
from tasks.terraform import read_infra_state
from tests.integration.terraform.conftest import AppliedStack, Emulator, catalog, environ
from tests.integration.terraform.merge_requests import ENV as MR_ENV
from tests.integration.terraform.merge_requests import (
    FIRST,
    RECORD,
    SECOND,
    VIOLATIONS,
    MergeRequests,
    gitlab_for_merge_requests,
    local_mapping,
    parameter_resource,
    parameter_values,
    terraform_workspaces,
)
from tests.integration.webhooks import payloads
from tests.integration.webhooks.fake_gitlab import FakeGitLab
from tests.support.git_remote import ProjectRepo
from tests.support.prefect import socialnet_events

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Where the stack keeps its resources: in the environment module (modules/environment).
MODULE = "module.environment.module"


def test_an_interrupted_apply_converges_on_rerun(
    applied_local: AppliedStack, emulator: Emulator
) -> None:
    assert applied_local.interrupted_after == "vpc created"
    assert isinstance(applied_local.interrupted, TerraformError)
    assert applied_local.result.status == "changes"
    # Everything exists exactly once: the rerun neither duplicated nor forgot anything.
    assert len(emulator.vpcs("local")) == 1
    assert len(emulator.instances("local")) == 2
    buckets = [b["Name"] for b in emulator.client("s3").list_buckets()["Buckets"]]
    assert sorted(buckets) == ["socialnet-backups-local", "socialnet-tfstate"]


def test_every_state_version_is_kept_and_an_earlier_one_restores_into_a_fresh_place(
    applied_local: AppliedStack, emulator: Emulator, tmp_path: Path
) -> None:
    """The state bucket's versioning is the state's backup: the interrupted apply's state is
    still there, and Terraform reads it back from a fresh file."""
    environment = load_environment("local")
    versions = state_versions(environment, emulator.endpoint)
    assert len(versions) >= 2 and versions[0].latest and not versions[-1].latest
    earliest, latest = (
        restore_state_version(environment, emulator.endpoint, version.version_id, tmp_path / name)
        for version, name in ((versions[-1], "earliest.tfstate"), (versions[0], "latest.tfstate"))
    )
    assert stat.S_IMODE(earliest.stat().st_mode) == 0o600
    before, now = (state_resources("local", emulator.endpoint, path) for path in (earliest, latest))
    assert before and len(before) < len(now)
    assert f"{MODULE}.network.aws_vpc.this" in now
    with pytest.raises(TerraformError, match="cannot be read"):
        restore_state_version(environment, emulator.endpoint, "no-such-version", tmp_path / "x")


def test_apply_shares_outputs_and_announces_it(applied_local: AppliedStack) -> None:
    shared = read_infra_state("local")
    assert shared is not None
    assert [node["role"] for node in shared["nodes"]] == ["control_plane", "workers"]
    assert all(node["private_ip"] for node in shared["nodes"])
    assert shared["backup_bucket"] == "socialnet-backups-local"
    assert shared["dns_zone"] == "socialnet.test" and shared["dns_zone_id"]
    assert shared["fqdn"] == "local.socialnet.test"
    [(event, environment, payload)] = applied_local.events
    assert (event, environment) == ("infra.applied", "local")
    assert payload["nodes"] == 2 and payload["changes"]["create"] > 0


def test_second_plan_shows_no_changes_and_no_drift_is_quiet(
    applied_local: AppliedStack,
) -> None:
    started = datetime.now(UTC)
    again = drift(envs=["local"])
    assert again.stacks["local"].status == "clean" and again.stacks["local"].addresses == []
    assert socialnet_events("infra.drift", started) == []
    assert artifacts("drift-local") == []


def test_a_changed_variable_plans_exactly_that_change(
    applied_local: AppliedStack, tmp_path: Path
) -> None:
    def bigger_nodes(document: dict[str, Any]) -> None:
        document["terraform"]["variables"] = {"node_size": "t3.large"}

    with catalog(tmp_path, "local", bigger_nodes):
        planned = provision(env="local", apply_changes=False)
    assert planned.status == "changes"
    # The resized nodes get new public addresses, which the environment's DNS record follows.
    assert planned.plan == [
        {
            "address": f"{MODULE}.dns.aws_route53_record.environment",
            "action": "update",
            "attributes": "records",
        },
        *(
            {
                "address": f"{MODULE}.nodes.aws_instance.node[{index}]",
                "action": "update",
                "attributes": "instance_type",
            }
            for index in (0, 1)
        ),
    ]


def test_drift_made_by_hand_is_reported(applied_local: AppliedStack, emulator: Emulator) -> None:
    ec2 = emulator.client("ec2")
    [vpc] = emulator.vpcs("local")
    ec2.create_tags(Resources=[vpc["VpcId"]], Tags=[{"Key": "Owner", "Value": "by-hand"}])
    started = datetime.now(UTC)
    try:
        found = drift(envs=["local"])
    finally:
        ec2.delete_tags(Resources=[vpc["VpcId"]], Tags=[{"Key": "Owner"}])
    assert found.stacks["local"].status == "drifted"
    assert found.stacks["local"].addresses == [f"{MODULE}.network.aws_vpc.this"]
    [event] = socialnet_events("infra.drift", started)
    assert event["payload"]["environment"] == "local"
    assert event["payload"]["addresses"] == [f"{MODULE}.network.aws_vpc.this"]
    [artifact] = artifacts("drift-local")
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert [row["address"] for row in rows] == [f"{MODULE}.network.aws_vpc.this"]


def artifacts(key: str) -> list[Any]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return list(
            client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
        )


def wait_for_paused_run(flow_name: str, timeout: float = 120) -> Any:
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    name={"any_": [flow_name]},
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
                )
            )
            if runs:
                return runs[0]
            time.sleep(0.5)
    raise AssertionError(f"{flow_name} never paused")


def test_production_gate_pauses_on_destroy_and_a_rejection_changes_nothing(
    applied_local: AppliedStack, emulator: Emulator, tmp_path: Path
) -> None:
    # "production" pointed at the local stack's state: renaming everything destroys everything.
    def production_over_local_state(document: dict[str, Any]) -> None:
        document["terraform"]["backend"]["key"] = "local/terraform.tfstate"

    outcome: list[BaseException | ProvisionResult] = []

    def run() -> None:
        try:
            outcome.append(provision(env="production", approval_timeout_seconds=300))
        except BaseException as error:
            outcome.append(error)

    with catalog(tmp_path, "production", production_over_local_state, based_on="local"):
        thread = threading.Thread(target=run)
        thread.start()
        try:
            paused = wait_for_paused_run("provision-production")
            resume_flow_run(paused.id, run_input={"approve": False, "comment": "not today"})
        finally:
            thread.join(timeout=300)
    [result] = outcome
    assert isinstance(result, ApplyRejectedError), result
    assert "not today" in str(result)
    assert len(emulator.instances("local")) == 2 and not emulator.instances("production")


def test_a_held_state_lock_fails_naming_its_holder(
    applied_local: AppliedStack, emulator: Emulator
) -> None:
    s3 = emulator.client("s3")
    lock = (
        '{"ID":"6f1c2a7e-0000-4000-8000-000000000001","Operation":"OperationTypeApply",'
        '"Info":"","Who":"alice@laptop","Version":"1.11.4",'
        '"Created":"2026-01-01T10:00:00Z","Path":"socialnet-tfstate/local/terraform.tfstate"}'
    )
    s3.put_object(Bucket="socialnet-tfstate", Key="local/terraform.tfstate.tflock", Body=lock)
    try:
        started = time.monotonic()
        with pytest.raises(StateLockedError) as raised:
            provision(env="local", lock_timeout="3s")
        assert time.monotonic() - started < 120
    finally:
        s3.delete_object(Bucket="socialnet-tfstate", Key="local/terraform.tfstate.tflock")
    message = str(raised.value)
    assert "alice@laptop" in message and "6f1c2a7e-0000-4000-8000-000000000001" in message
    assert "waited 3s" in message


def test_bad_input_fails_before_any_change(
    applied_local: AppliedStack, emulator: Emulator, tmp_path: Path
) -> None:
    with pytest.raises(UnknownEnvironmentError, match="unknown environment 'nowhere'"):
        provision(env="nowhere")

    def misspelt(document: dict[str, Any]) -> None:
        document["terraform"]["variables"] = {"node_cont": 3}

    with (
        catalog(tmp_path / "a", "local", misspelt),
        pytest.raises(
            TerraformConfigError, match=r"local.yaml: terraform.variables.node_cont: not a variable"
        ),
    ):
        provision(env="local")

    def out_of_range(document: dict[str, Any]) -> None:
        document["terraform"]["variables"] = {"node_count": 0}

    with catalog(tmp_path / "b", "local", out_of_range), pytest.raises(TerraformError) as raised:
        provision(env="local")
    # Terraform's own report, whole, in the error.
    assert "node_count must be a whole number between 1 and 50" in str(raised.value)

    def on_aws(document: dict[str, Any]) -> None:
        document["cloud"].pop("endpoint")

    with (
        catalog(tmp_path / "c", "staging", on_aws, based_on="local"),
        environ(
            AWS_ACCESS_KEY_ID=None,
            AWS_SECRET_ACCESS_KEY=None,
            AWS_PROFILE=None,
            AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
            AWS_CONFIG_FILE=str(tmp_path / "none"),
        ),
        pytest.raises(MissingCredentialsError, match="no AWS credentials"),
    ):
        provision(env="staging")
    assert len(emulator.instances("local")) == 2


STACK_VARIABLES = "infrastructure/terraform/stacks/local/variables.tf"


ADMIN_CIDR = "10.20.0.0/16"


def admin_ports(emulator: Emulator) -> set[tuple[int, str]]:
    """(port, source) of the rules the nodes' security group opens to administrators."""
    [group] = emulator.client("ec2").describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["socialnet-local-nodes"]}]
    )["SecurityGroups"]
    return {
        (rule["FromPort"], address["CidrIp"])
        for rule in group["IpPermissions"]
        for address in rule.get("IpRanges", [])
        if rule.get("FromPort") in {22, 6443}
    }


def test_a_commit_is_planned_and_applied_from_its_own_tree(
    applied_local: AppliedStack, emulator: Emulator, project_source: ProjectRepo
) -> None:
    """The stack of the commit, not of the control plane's checkout: a default changed in a
    commit pushed to the remote is planned, applied and recorded with the state's serial.
    The default is the administrators' addresses: one security group changes in place, in
    seconds (bigger nodes, planned in test_a_changed_variable_plans_exactly_that_change, would
    stop and start both instances and wait for DNS twice, about a minute more)."""
    before = read_infra_state("local")
    assert before is not None
    assert admin_ports(emulator) == set()
    text = (project_source.work / STACK_VARIABLES).read_text()
    old = 'variable "admin_cidrs" {\n  type    = list(string)\n  default = null'
    assert old in text
    project_source.write(
        STACK_VARIABLES, text.replace(old, old.replace("null", f'["{ADMIN_CIDR}"]'))
    )
    sha = project_source.commit("terraform: administrators may reach the local nodes")
    project_source.push("develop")

    planned = provision(env="local", apply_changes=False, ref=sha)
    assert planned.status == "changes"
    assert planned.plan == [
        {
            "address": f"{MODULE}.network.aws_security_group.nodes",
            "action": "update",
            "attributes": "ingress",
        }
    ]
    provision(env="local", ref=sha)
    assert admin_ports(emulator) == {(22, ADMIN_CIDR), (6443, ADMIN_CIDR)}
    applied = read_infra_state("local")
    assert applied is not None and applied["commit"] == sha and applied["stack_digest"]
    assert applied["serial"] > (before["serial"] or 0)

    provision(env="local")  # the working tree again: the stack as the other tests left it
    assert admin_ports(emulator) == set()
    restored = read_infra_state("local")
    assert restored is not None and restored["commit"] is None
    assert restored["serial"] > applied["serial"]


# --- merge requests, Atlantis-grade (here to share the applied stack; see merge_requests.py) -----


@pytest.fixture
def merge_request_gitlab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeGitLab]:
    with gitlab_for_merge_requests(monkeypatch, tmp_path) as fake:
        yield fake


def test_a_merge_request_is_planned_locked_checked_and_applied_from_a_note(
    applied_local: AppliedStack,
    emulator: Emulator,
    project_source: ProjectRepo,
    merge_request_gitlab: FakeGitLab,
    tmp_path: Path,
) -> None:
    """Atlantis-grade merge requests on the stack: the plan is of the head, policy findings are
    listed and block apply, a second merge request is locked out, apply from a note only when
    approved and mergeable and of exactly the plan of the head, a new push edits the same note,
    a merge releases the lock (helpers: merge_requests.py; close and unlock:
    tests/integration/webhooks/test_merge_request_commands.py). Two plans, one apply."""
    gitlab = merge_request_gitlab
    requests = MergeRequests(project_source, gitlab, local_mapping(tmp_path))
    timings: dict[str, float] = {}
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        timings[name] = round(time.monotonic() - clock, 1)
        clock = time.monotonic()

    branch = "feature/parameter"
    try:
        # !31 adds an SSM parameter, and SSH from anywhere and a public bucket: its head is planned
        # under the stack's lock, the findings are listed in its note.
        project_source.switch(branch, "develop")
        first = requests.push(
            FIRST, branch, parameter_resource("a") + VIOLATIONS, "a parameter, debug access"
        )
        planned = requests.opened(FIRST, first, branch)
        lap("plan !31")
        assert planned.status == "changes"
        assert {(row["address"], row["action"]) for row in planned.plan} == {
            (RECORD, "create"),
            ("aws_security_group.debug", "create"),
            ("aws_s3_bucket.exports", "create"),
            ("aws_s3_bucket_acl.exports", "create"),
        }, "the plan is of the merge request's head, not of the control plane's tree"
        [note] = requests.plan_notes(FIRST)
        assert f"at `{first[:8]}`" in note and RECORD in note and "cannot be applied" in note
        for finding in (
            "ssh_ingress: aws_security_group.debug: ingress tcp 22-22 is open to the whole internet",
            "public_buckets: aws_s3_bucket_acl.exports: the ACL public-read makes the bucket public",
            "public_buckets: aws_s3_bucket.exports: no aws_s3_bucket_public_access_block",
            "encryption: aws_s3_bucket.exports: no aws_s3_bucket_server_side_encryption",
        ):
            assert finding in note, finding
        lock = read_lock(MR_ENV)
        assert lock is not None and lock.merge_request == FIRST and lock.plan is not None
        assert (lock.plan.sha, lock.plan.policy_failures) == (first, 4)

        # !32 touches the same stack: locked out, told so, nothing planned.
        project_source.switch("feature/other", "develop")
        second = requests.push(
            SECOND, "feature/other", parameter_resource("other"), "another record"
        )
        with pytest.raises(PlanRefusedError, match=f"{MR_ENV}: locked by !{FIRST}"):
            requests.opened(SECOND, second, "feature/other")
        [locked] = requests.plan_notes(SECOND)
        assert f"locked by !{FIRST}" in locked
        assert not (terraform_workspaces() / f"mr-{SECOND}").exists()
        lap("locked out !32")

        # Apply before approval, with findings: refused in one line saying all, nothing changed.
        with pytest.raises(ApplyRefusedError) as refused:
            requests.comment(FIRST, first, branch, "socialnet-ops apply")
        reasons = str(refused.value)
        assert "4 policy findings block apply" in reasons and "!31 is not approved" in reasons
        assert len(reasons.splitlines()) == 1 and reasons in requests.replies(FIRST)
        assert parameter_values(emulator) == []
        assert not emulator.client("ec2").describe_security_groups(
            Filters=[{"Name": "group-name", "Values": ["socialnet-local-debug"]}]
        )["SecurityGroups"]

        # Approved; a fix is pushed, but not planned yet: refused until re-planned.
        project_source.switch(branch)
        gitlab.merge_request(FIRST, first, approved=True)
        fixed = requests.push(FIRST, branch, parameter_resource("b"), "the parameter only")
        with pytest.raises(ApplyRefusedError, match=f"the head moved to {fixed[:8]}.*re-plan"):
            requests.comment(FIRST, fixed, branch, "socialnet-ops apply local")
        assert parameter_values(emulator) == []
        lap("refusals")

        # The push's delivery plans the new head: the same note, edited in place.
        replanned = requests.opened(FIRST, fixed, branch, oldrev=first)
        lap("re-plan !31")
        assert replanned.plan == [{"address": RECORD, "action": "create", "attributes": ""}]
        [note] = requests.plan_notes(FIRST)
        assert f"at `{fixed[:8]}`" in note and first[:8] not in note
        assert "4 rule sets passed" in note and "socialnet-ops apply local" in note
        added = [body for body in gitlab.notes(FIRST) if note_marker(MR_ENV) in body]
        assert len(added) == 1, "a new push edits the plan note, it does not add one"

        # Approved, mergeable, the head planned: exactly the saved plan is applied, from any
        # worker (the local copy is gone: the one kept in the state bucket is fetched, checked).
        (terraform_workspaces() / f"mr-{FIRST}" / "plans" / "current.tfplan").unlink()
        result = requests.comment(FIRST, fixed, branch, "socialnet-ops apply")
        lap("apply !31")
        assert (result.commit, result.merge_request) == (fixed, FIRST)
        assert parameter_values(emulator) == ["b"]
        [note] = requests.plan_notes(FIRST)
        assert f"**Status:** applied {fixed[:8]}" in note and RECORD in note
        shared = read_infra_state(MR_ENV)
        assert shared is not None and shared["commit"] == fixed
        with pytest.raises(ApplyRefusedError, match="was applied at"):
            requests.comment(FIRST, fixed, branch, "socialnet-ops apply")

        # Merged: the receiver releases the lock and says so; another merge request may plan.
        reply = requests.receiver(
            "merge_request", payloads.merge_request(FIRST, fixed, "merge", source=branch)
        )
        assert reply["released_locks"] == [MR_ENV] and read_lock(MR_ENV) is None
        assert any("released the lock of `local`" in body for body in requests.replies(FIRST))
        lap("merge")
    finally:
        Variable.unset(lock_variable(MR_ENV))
        provision(env=MR_ENV)  # the working tree again: the record goes, the stack is as found
        lap("restore")
        print(f"merge request steps (s): {timings}")
    assert parameter_values(emulator) == []
