"""Stack locks: a merge request holds the lock of each Terraform stack it planned, from its first
plan until it is merged or closed (Atlantis's locks), so two merge requests never plan over each
other and a plan stays applicable until its own merge request applies it.

Pure: the lock, its plan record and the decisions. Where locks live (one Prefect Variable per
stack, `stack-lock-<env>`, every change made inside the `stack-locks` global concurrency limit used
as a mutex) is `tasks/stack_locks.py` for the flows and `webhooks/locks.py` for the receiver, which
releases them on a merge request's `merge` and `close` events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# The global concurrency limit (one slot) every read-modify-write of a lock happens inside.
LOCK_MUTEX = "stack-locks"
# A Prefect Variable holds at most 5,000 characters of JSON: the note lists every finding, the
# lock only the first few.
KEPT_FINDINGS = 5
SHORT = 8


def lock_variable(environment: str) -> str:
    """The Prefect Variable holding the lock of `environment`'s stack."""
    return f"stack-lock-{environment}"


def short(sha: str) -> str:
    return sha[:SHORT]


class PlanRecord(BaseModel):
    """The saved plan a merge request may apply: what it was made from and where it is kept."""

    model_config = ConfigDict(frozen=True)

    sha: str = Field(description="the commit planned (the merge request's head then)")
    planned_at: str
    status: Literal["clean", "changes"]
    headline: str = Field(description="e.g. 1 to add, 0 to change, 0 to replace, 0 to destroy")
    plan_digest: str = Field(description="sha256 of the saved plan file")
    plan_object: str = Field(description="where every worker finds the plan file (state bucket)")
    policy_failures: int = 0
    policy_findings: list[str] = Field(default_factory=list, description="the first few")
    flow_run_id: str | None = None
    applied_at: str | None = None
    applied_by: str | None = Field(default=None, description="the flow run that applied it")


class StackLock(BaseModel):
    model_config = ConfigDict(frozen=True)

    environment: str
    project_id: int
    merge_request: int
    taken_at: str
    plan: PlanRecord | None = None

    def held_by(self, project_id: int, merge_request: int) -> bool:
        return (self.project_id, self.merge_request) == (project_id, merge_request)

    def describe(self) -> str:
        """`!7 (planned a1b2c3d4 at ...)`, for the note of a merge request locked out."""
        if self.plan is None:
            return f"!{self.merge_request} (since {self.taken_at})"
        return f"!{self.merge_request} (planned {short(self.plan.sha)} at {self.plan.planned_at})"


@dataclass(frozen=True)
class Claim:
    """A plan's request for the lock: granted (the lock as it now is) or refused (the holder's)."""

    granted: bool
    lock: StackLock

    def refusal(self) -> str:
        return (
            f"{self.lock.environment}: locked by {self.lock.describe()}; it is freed when "
            f"!{self.lock.merge_request} is merged or closed, then push or comment "
            f"`socialnet-ops plan {self.lock.environment}`"
        )


def claim(
    current: StackLock | None, environment: str, project_id: int, merge_request: int, now: str
) -> Claim:
    """Take the lock for a plan, or re-use it when this merge request holds it.

    A new plan drops the previous plan record: until it is recorded, there is nothing to apply,
    so a plan that fails halfway can never leave an older plan applicable.
    """
    if current is None:
        lock = StackLock(
            environment=environment,
            project_id=project_id,
            merge_request=merge_request,
            taken_at=now,
        )
        return Claim(True, lock)
    if current.held_by(project_id, merge_request):
        return Claim(True, current.model_copy(update={"plan": None}))
    return Claim(False, current)


def with_plan(lock: StackLock, record: PlanRecord) -> StackLock:
    return lock.model_copy(update={"plan": record})


def with_apply(lock: StackLock, applied_at: str, flow_run_id: str | None) -> StackLock:
    if lock.plan is None:
        raise ValueError(f"{lock.environment}: no plan to mark applied")
    plan = lock.plan.model_copy(update={"applied_at": applied_at, "applied_by": flow_run_id})
    return lock.model_copy(update={"plan": plan})


def releases(current: StackLock | None, project_id: int, merge_request: int) -> bool:
    """Whether the merge request's merge, close or `unlock` removes this lock (only its own)."""
    return current is not None and current.held_by(project_id, merge_request)
