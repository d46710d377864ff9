"""Merge requests, Atlantis-style: note commands, what GitLab says of a merge request, whether a
saved plan may be applied, and the notes posted back.

Pure: the flows (`flows/merge_request.py`, `flows/provision.py`) read GitLab and the stack lock and
hand them in; the webhook receiver parses commands with `parse_command`.

One note per merge request and stack carries the plan: a hidden marker names it, so a new push
edits that note instead of adding one. Its status line changes when the plan is applied.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from socialnet_ops.core.failures import RejectedError
from socialnet_ops.core.policies import PolicyVerdict
from socialnet_ops.core.results import FlowResult
from socialnet_ops.core.stack_locks import StackLock, short

CommandVerb = Literal["plan", "apply", "unlock"]
COMMANDS: tuple[CommandVerb, ...] = ("plan", "apply", "unlock")
# The first line of a note, whole: `socialnet-ops apply` or `socialnet-ops apply staging`. A note
# that only mentions a command (ours do, in "how to apply") is not one.
_COMMAND = re.compile(
    r"^\s*socialnet-ops\s+(?P<verb>plan|apply|unlock)(?:\s+(?P<env>[a-z][a-z0-9-]{0,30}))?\s*$"
)
# GitLab's detailed_merge_status when nothing stops the merge.
MERGEABLE = "mergeable"


@dataclass(frozen=True)
class NoteCommand:
    verb: CommandVerb
    environment: str | None = None  # None: every stack the merge request touches


def parse_command(note: str) -> NoteCommand | None:
    """The command a merge request note gives, or None when the note is not one."""
    lines = note.strip().splitlines()
    match = _COMMAND.match(lines[0]) if lines else None
    if match is None:
        return None
    verb: CommandVerb = match.group("verb")  # type: ignore[assignment]
    return NoteCommand(verb, match.group("env"))


def workspace_use(merge_request: int) -> str:
    """The Terraform working copy of a merge request's plans (`.local/<env>/terraform/<use>/`)."""
    return f"mr-{merge_request}"


def plan_object_key(environment: str, merge_request: int) -> str:
    """Where a merge request's saved plan is kept in the state bucket, for every worker."""
    return f"socialnet-plans/{environment}/mr-{merge_request}.tfplan"


class MergeRequestState(BaseModel):
    """What the GitLab API says of a merge request now (not what a delivery said earlier)."""

    model_config = ConfigDict(frozen=True)

    iid: int
    sha: str = Field(description="its head commit")
    state: str = Field(description="opened, closed, merged, locked")
    detailed_merge_status: str = Field(description="mergeable, not_approved, conflict, ...")
    approved: bool
    target_branch: str = Field(default="main", description="where it merges: its policies rule")


class ApplyRefusedError(RejectedError):
    """An apply command that may not run; nothing was changed."""


class PlanRefusedError(RejectedError):
    """A plan that may not run (the stack is locked by another merge request, ...)."""


def replan_hint(environment: str) -> str:
    return f"re-plan: push or comment `socialnet-ops plan {environment}`"


def apply_refusals(
    environment: str,
    lock: StackLock | None,
    project_id: int,
    merge_request: MergeRequestState,
) -> list[str]:
    """Why merge request `merge_request` may not apply its saved plan of `environment` (none: it
    may). Every reason is given, so one refusal says everything to fix."""
    iid = merge_request.iid
    reasons: list[str] = []
    if merge_request.state != "opened":
        reasons.append(f"!{iid} is {merge_request.state}")
    if lock is None or not lock.held_by(project_id, iid):
        held = f" ({environment} is locked by !{lock.merge_request})" if lock else ""
        reasons.append(f"no plan of {environment} for !{iid}{held}")
        return reasons
    plan = lock.plan
    if plan is None:
        reasons.append(
            f"no saved plan of {environment} for !{iid} (the last plan failed or is still "
            f"running): comment `socialnet-ops plan {environment}`"
        )
        return reasons
    if plan.applied_at:
        reasons.append(
            f"the plan of {short(plan.sha)} was applied at {plan.applied_at}; "
            + replan_hint(environment)
        )
    if merge_request.sha != plan.sha:
        reasons.append(
            f"the head moved to {short(merge_request.sha)} since the plan of {short(plan.sha)}; "
            + replan_hint(environment)
        )
    if plan.policy_failures:
        count = plan.policy_failures
        reasons.append(
            f"{count} policy finding{'s' if count != 1 else ''} block apply (listed in the plan note)"
        )
    if plan.status == "clean" and not plan.applied_at:
        reasons.append(f"the plan of {short(plan.sha)} has no changes: nothing to apply")
    if not merge_request.approved:
        reasons.append(f"!{iid} is not approved")
    if merge_request.detailed_merge_status != MERGEABLE:
        reasons.append(
            f"!{iid} is not mergeable (GitLab: {merge_request.detailed_merge_status or 'unknown'})"
        )
    return reasons


def refusal_line(verb: str, environment: str, merge_request: int, reasons: Sequence[str]) -> str:
    return f"socialnet-ops {verb} {environment} on !{merge_request} refused: " + "; ".join(reasons)


# --- notes ---------------------------------------------------------------------------------------


def note_marker(environment: str) -> str:
    """Names the plan note of a stack in a merge request (an HTML comment: not shown)."""
    return f"<!-- socialnet-ops:plan:{environment} -->"


_STATUS = re.compile(r"^\*\*Status:\*\*.*$", re.MULTILINE)


def _table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        cells = (str(row.get(column, "")).replace("|", "\\|") for column in columns)
        lines.append("| " + " | ".join(f"`{cell}`" if cell else "" for cell in cells) + " |")
    return lines


def _link(url: str | None, text: str = "Prefect run") -> str:
    return f"[{text}]({url})" if url else text


def plan_note(
    environment: str,
    merge_request: int,
    sha: str,
    headline: str,
    rows: Sequence[Mapping[str, Any]],
    verdict: PolicyVerdict,
    run_url: str | None,
    planned_at: str,
) -> str:
    """The plan note: commit planned, resource changes, policy results, how to apply."""
    has_changes = bool(rows)
    if not verdict.passed:
        status = "**Status:** planned; policy checks failed, so it cannot be applied"
    elif has_changes:
        status = "**Status:** planned, not applied"
    else:
        status = "**Status:** no changes"
    lines = [
        note_marker(environment),
        f"#### Terraform plan of `{environment}` at `{short(sha)}`",
        "",
        status,
        "",
        f"Planned {sha} at {planned_at} ({_link(run_url)}): **{headline}**",
        "",
    ]
    lines += _table(rows) if rows else ["No resource changes."]
    lines += ["", f"**Policies** ({verdict.source}): {verdict.summary()}"]
    lines += [f"- :x: {line}" for line in verdict.lines()]
    lines += [
        "",
        f":lock: !{merge_request} holds the lock of `{environment}` until it is merged or closed.",
    ]
    if has_changes and verdict.passed:
        lines.append(
            f"To apply exactly this plan once !{merge_request} is approved and mergeable, comment "
            f"`socialnet-ops apply {environment}`. A new push plans again."
        )
    elif not verdict.passed:
        lines.append("Fix the findings and push: the new head is planned and checked again.")
    return "\n".join(lines)


def locked_note(environment: str, lock: StackLock, sha: str) -> str:
    """The note of a merge request locked out of a stack: no plan was made."""
    return "\n".join(
        [
            note_marker(environment),
            f"#### Terraform plan of `{environment}` at `{short(sha)}`",
            "",
            f"**Status:** not planned: `{environment}` is locked by {lock.describe()}",
            "",
            f"The lock is freed when !{lock.merge_request} is merged or closed; then push or "
            f"comment `socialnet-ops plan {environment}`.",
        ]
    )


def failed_note(environment: str, sha: str, reason: str, run_url: str | None) -> str:
    return "\n".join(
        [
            note_marker(environment),
            f"#### Terraform plan of `{environment}` at `{short(sha)}`",
            "",
            f"**Status:** the plan failed ({_link(run_url)}): {reason}",
            "",
            f"Nothing can be applied; fix it and push, or comment `socialnet-ops plan {environment}`.",
        ]
    )


def with_status(body: str | None, environment: str, status: str) -> str:
    """The plan note with its status line replaced (a note without one gets a fresh body)."""
    line = f"**Status:** {status}"
    if body and _STATUS.search(body):
        return _STATUS.sub(lambda _: line, body, count=1)
    return "\n".join([note_marker(environment), f"#### Terraform `{environment}`", "", line])


def applied_status(sha: str, headline: str, applied_at: str, run_url: str | None) -> str:
    return f"applied {short(sha)} at {applied_at} ({_link(run_url)}): {headline}"


# --- results -------------------------------------------------------------------------------------


class MergeRequestApplyResult(FlowResult):
    """A merge request's saved plan, applied exactly (the note command `socialnet-ops apply`)."""

    merge_request: int
    commit: str
    headline: str
    serial: int | None = Field(default=None, description="the state's serial after apply")
    seconds: dict[str, float] = Field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"terraform: applied the plan of !{self.merge_request} at {short(self.commit)} on "
            f"{self.environment} ({self.headline})"
        )
