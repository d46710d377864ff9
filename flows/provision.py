"""provision: an environment's servers, network, DNS and storage with Terraform, plan then apply."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from flows.common import StepClock, checked_environment, checked_source
from flows.merge_request import plan_merge_request
from socialnet_ops.core.failures import before_any_change
from socialnet_ops.core.merge_requests import PlanRefusedError
from socialnet_ops.core.results import ProvisionResult
from socialnet_ops.core.terraform import GATED_ENVIRONMENTS, Plan, needs_approval
from tasks.gitlab import gitlab_status_hooks
from tasks.reporting import publish
from tasks.terraform import (
    apply,
    describe_applied,
    ensure_state_bucket,
    init,
    plan,
    preflight,
    publish_plan,
    read_outputs,
    request_approval,
    store_infra_state,
    validate,
    workspace_in_use,
)

# Runs started from GitLab (merge request plans) report their commit status; the plan note is
# written by the flow itself, edited in place. Inside a release, the release reports.
_hooks = gitlab_status_hooks(notes=False, subflows=False)


@flow(
    name="provision",
    flow_run_name="provision-{env}",
    on_running=list(_hooks["on_running"]),
    on_completion=list(_hooks["on_completion"]),
    on_failure=list(_hooks["on_failure"]),
    on_crashed=list(_hooks["on_crashed"]),
    on_cancellation=list(_hooks["on_cancellation"]),
)
def provision(
    env: str,
    endpoint: str | None = None,
    lock_timeout: str = "120s",
    approval_timeout_seconds: int = 3600,
    gated_environments: list[str] | None = None,
    apply_changes: bool = True,
    ref: str | None = None,
    merge_request: int | None = None,
    project_id: int | None = None,
) -> ProvisionResult:
    """init -> validate -> plan -> (approval of destroys in gated environments) -> apply -> outputs.

    `apply_changes=False` stops after the plan artifact (a plan for review, as Atlantis's `plan`).

    `endpoint` overrides the AWS endpoint (default: AWS_ENDPOINT_URL, else the catalog's
    cloud.endpoint). A rerun after a failure or an interrupted apply plans afresh and converges.
    `ref`: the commit whose stacks and modules are planned (None: the working tree).

    `merge_request` (with `project_id` and `ref`, its head): the plan of a GitLab merge request,
    Atlantis-style (flows/merge_request.py): under the stack's lock, in the merge request's own
    working copy, policy-checked, noted on the merge request; applied only by the note command
    `socialnet-ops apply`.
    """
    checked_environment(env)
    if merge_request is not None:
        with before_any_change():
            if apply_changes:
                raise PlanRefusedError(
                    f"{env}: a merge request's plan is applied by the note command "
                    "`socialnet-ops apply` (approved and mergeable), not by provision; "
                    "pass apply_changes=false"
                )
        return plan_merge_request(env, ref, merge_request, project_id, endpoint, lock_timeout)
    source = checked_source(ref)
    code = str(source.root)
    clock = StepClock()
    with workspace_in_use(env, "provision"):
        with clock("preflight"):
            resolved = preflight(env, endpoint, source=code)
            ensure_state_bucket(env, resolved)
        with clock("init"):
            init(env, resolved, source=code)
            validate(env)
        with clock("plan"):
            saved = plan(env, resolved, lock_timeout=lock_timeout)
            publish_plan(saved, f"Terraform plan for {env}")
        if not apply_changes:
            return provision_result(saved, clock)
        gated = GATED_ENVIRONMENTS if gated_environments is None else tuple(gated_environments)
        if needs_approval(env, saved.summary, gated):
            with clock("approval"):
                request_approval(saved, approval_timeout_seconds)
        if saved.status == "changes":
            with clock("apply"):
                apply(saved, resolved, lock_timeout=lock_timeout)
        with clock("outputs"):
            applied = describe_applied(env, resolved, source.sha)
            shared = store_infra_state(env, read_outputs(env, resolved), applied)
    return publish(provision_result(saved, clock, shared))


def provision_result(
    saved: Plan, clock: StepClock, outputs: dict[str, Any] | None = None
) -> ProvisionResult:
    return ProvisionResult(
        environment=saved.environment,
        flow_run_id=flow_run.get_id(),
        status=saved.status,
        plan=saved.summary.rows(),
        changes=saved.summary.counts,
        outputs=outputs,
        seconds=clock.seconds,
    )
