"""provision: an environment's servers, network, DNS and storage with Terraform, plan then apply."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from flows.common import StepClock, checked_environment, checked_source
from socialnet_ops.adapters.terraform import GATED_ENVIRONMENTS, needs_approval
from socialnet_ops.core.results import ProvisionResult
from tasks.reporting import publish
from tasks.terraform import (
    Plan,
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


@flow(name="provision", flow_run_name="provision-{env}")
def provision(
    env: str,
    endpoint: str | None = None,
    lock_timeout: str = "120s",
    approval_timeout_seconds: int = 3600,
    gated_environments: list[str] | None = None,
    apply_changes: bool = True,
    ref: str | None = None,
) -> ProvisionResult:
    """init -> validate -> plan -> (approval of destroys in gated environments) -> apply -> outputs.

    `apply_changes=False` stops after the plan artifact (a plan for review, as Atlantis's `plan`).

    `endpoint` overrides the AWS endpoint (default: AWS_ENDPOINT_URL, else the catalog's
    cloud.endpoint). A rerun after a failure or an interrupted apply plans afresh and converges.
    `ref`: the commit whose stacks and modules are planned (None: the working tree).
    """
    checked_environment(env)
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
