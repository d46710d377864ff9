"""provision: an environment's servers, network, DNS and storage with Terraform, plan then apply."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.common import StepClock, checked_environment
from socialnet_ops.adapters.terraform import GATED_ENVIRONMENTS, needs_approval
from tasks.reporting import emit
from tasks.terraform import (
    apply,
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
) -> dict[str, Any]:
    """init -> validate -> plan -> (approval of destroys in gated environments) -> apply -> outputs.

    `apply_changes=False` stops after the plan artifact (a plan for review, as Atlantis's `plan`).

    `endpoint` overrides the AWS endpoint (default: AWS_ENDPOINT_URL, else the catalog's
    cloud.endpoint). A rerun after a failure or an interrupted apply plans afresh and converges.
    """
    checked_environment(env)
    clock = StepClock()
    with workspace_in_use(env, "provision"):
        with clock("preflight"):
            resolved = preflight(env, endpoint)
            ensure_state_bucket(env, resolved)
        with clock("init"):
            init(env, resolved)
            validate(env)
        with clock("plan"):
            saved = plan(env, resolved, lock_timeout=lock_timeout)
            publish_plan(saved, f"Terraform plan for {env}")
        if not apply_changes:
            return {"environment": env, "status": saved.status, "plan": saved.summary.rows()}
        gated = GATED_ENVIRONMENTS if gated_environments is None else tuple(gated_environments)
        if needs_approval(env, saved.summary, gated):
            with clock("approval"):
                request_approval(saved, approval_timeout_seconds)
        if saved.status == "changes":
            with clock("apply"):
                apply(saved, resolved, lock_timeout=lock_timeout)
        with clock("outputs"):
            shared = store_infra_state(env, read_outputs(env, resolved))
    emit(
        "infra.applied",
        env,
        changes=saved.summary.counts,
        nodes=len(shared["nodes"]),
        backup_bucket=shared["backup_bucket"],
        dns_zone=shared["dns_zone"],
    )
    return {
        "environment": env,
        "status": saved.status,
        "changes": saved.summary.counts,
        "outputs": shared,
        "seconds": clock.seconds,
    }
