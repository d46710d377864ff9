"""canary-control: "promote now" or "abort now" for the canary in flight, at any step.

Argo Rollouts' `promote --full` and `abort`, from the CLI (`socialnet-ops promote --full`,
`socialnet-ops abort`) or the Prefect UI (deployment `canary-control`). The request, with who
asked and why, is stored with the canary by the platform; the canary's run obeys it before its
next step or measurement (within a few seconds) and records it in its step table. A run paused
at a gate is resumed with the answer: approved for a promotion, refused for an abort.
"""

from __future__ import annotations

import getpass
from typing import Any, Literal
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run
from prefect.runtime import flow_run as this_run

from flows.common import checked_environment
from socialnet_ops.core.failures import RejectedError, before_any_change
from socialnet_ops.core.ledger import ControlRequest
from tasks.platform import request_canary_action


def asked_by(by: str) -> str:
    """Who asks: `by` when given; a deployment run was started from the UI or the API, any
    other run by the OS user running it (the CLI's)."""
    if by.strip():
        return by.strip()
    if this_run.get_deployment_id() is not None:
        return f"the Prefect UI/API (run {this_run.get_name()})"
    return getpass.getuser()


def answer_paused_gate(flow_run_id: str | None, request: ControlRequest) -> bool:
    """A canary run paused at a gate only reads requests once it goes on: answer the gate."""
    if flow_run_id is None:
        return False
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(flow_run_id)).state
    if state is None or not state.is_paused():
        return False
    resume_flow_run(
        UUID(flow_run_id),
        run_input={"approve": request.action == "promote", "comment": request.said},
    )
    get_run_logger().info("answered the gate of run %s: %s", flow_run_id, request.action)
    return True


@flow(name="canary-control", flow_run_name="canary-control-{env}-{action}")
def canary_control(
    env: str, action: Literal["promote", "abort"], reason: str, by: str = ""
) -> dict[str, Any]:
    """Ask the canary in flight on `env` to promote fully now or abort now, saying why."""
    with before_any_change():
        checked_environment(env)
        if not reason.strip():
            raise RejectedError(f"canary-control {action} on {env}: reason is empty; say why")
        request = ControlRequest(action=action, by=asked_by(by), reason=reason.strip())
        record = request_canary_action(env, request)
    gate = answer_paused_gate(record.flow_run_id, request)
    return {
        "environment": env,
        "action": action,
        "by": request.by,
        "reason": request.reason,
        "version": record.version,
        "step": record.step,
        "weight": record.weight,
        "canary_run": record.flow_run_id,
        "answered_gate": gate,
    }
