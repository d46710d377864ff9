"""Rollout status of a Deployment, judged the way `kubectl rollout status` does. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RolloutState:
    done: bool
    failed: bool
    message: str


def rollout_state(deployment: dict[str, Any]) -> RolloutState:
    """From a Deployment as the API serves it (camelCase dict).

    Done when the controller saw the latest spec (observedGeneration), every replica runs the new
    template (updatedReplicas) and is available, and no old replica is left. Failed when the
    Progressing condition says ProgressDeadlineExceeded: the reason is the controller's message.
    """
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    name = meta.get("name", "?")
    wanted = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    generation = int(meta.get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    if observed < generation:
        return RolloutState(
            False, False, f"{name}: waiting for the controller to see generation {generation}"
        )
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "Progressing"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return RolloutState(
                False,
                True,
                f"{name}: ProgressDeadlineExceeded: {condition.get('message') or 'no progress'}",
            )
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < wanted:
        return RolloutState(False, False, f"{name}: {updated} of {wanted} replicas updated")
    if total > updated:
        return RolloutState(
            False, False, f"{name}: {total - updated} old replicas pending termination"
        )
    if available < updated:
        return RolloutState(
            False, False, f"{name}: {available} of {updated} updated replicas available"
        )
    return RolloutState(True, False, f"{name}: {available}/{wanted} replicas updated and available")
