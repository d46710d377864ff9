"""GitLab in the flows: tasks that report a milestone, and the state hooks that report a run
started from GitLab back to its commit and merge request (the client: adapters/gitlab.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.flows import FlowStateHook
from prefect.settings import PREFECT_UI_URL
from pydantic import BaseModel

from socialnet_ops.adapters import gitlab
from socialnet_ops.adapters.gitlab import (
    CommitState,
    post_merge_request_note,
    read_merge_request_state,
    report_commit_status,
    upsert_merge_request_note,
)
from socialnet_ops.core.gitflow import context_from_tags
from socialnet_ops.core.merge_requests import MergeRequestState, note_marker, with_status

# Prefect tasks over the same functions, for flows that report a milestone themselves.
report_commit_status_task = task(name="gitlab-commit-status", retries=0)(report_commit_status)
post_merge_request_note_task = task(name="gitlab-merge-request-note", retries=0)(
    post_merge_request_note
)


@task(name="gitlab-merge-request-state", cache_policy=NO_CACHE, retries=0)
def merge_request_state(project_id: int, merge_request: int) -> MergeRequestState:
    """Head, state, approval and mergeability of the merge request, from the GitLab API now."""
    return read_merge_request_state(project_id, merge_request)


@task(name="gitlab-plan-note", cache_policy=NO_CACHE, retries=0)
def write_plan_note(project_id: int, merge_request: int, environment: str, body: str) -> bool:
    """The merge request's note for `environment`, edited in place (added the first time)."""
    return upsert_merge_request_note(
        project_id, merge_request, note_marker(environment), lambda _old: body
    )


@task(name="gitlab-plan-note-status", cache_policy=NO_CACHE, retries=0)
def set_plan_note_status(
    project_id: int, merge_request: int, environment: str, status: str
) -> bool:
    """Change the status line of the plan note (e.g. to applied), keeping the plan shown."""
    return upsert_merge_request_note(
        project_id,
        merge_request,
        note_marker(environment),
        lambda old: with_status(old, environment, status),
    )


# --- flow state hooks ----------------------------------------------------------------------------


def flow_run_url(flow_run_id: Any) -> str | None:
    return gitlab.flow_run_url(PREFECT_UI_URL.value(), flow_run_id)


def run_gitlab_context(flow_run: Any) -> dict[str, str] | None:
    """The GitLab origin of a run: its `gitlab` parameter, else its `gitlab.*` tags."""
    parameters = getattr(flow_run, "parameters", None) or {}
    context = parameters.get("gitlab") if isinstance(parameters.get("gitlab"), Mapping) else None
    context = dict(context or context_from_tags(getattr(flow_run, "tags", None) or []))
    return context if context.get("project_id") and context.get("sha") else None


def _result_summary(state: Any) -> Mapping[str, Any] | None:
    try:
        result = state.result(raise_on_failure=False)
    except Exception:  # the summary is a nicety: a result that cannot be read is left out
        return None
    if isinstance(result, BaseModel):  # a typed flow result (socialnet_ops/core/results.py)
        return result.model_dump(mode="json")
    return result if isinstance(result, Mapping) else None


def note_body(flow_name: str, run_name: str, outcome: str, url: str | None, state: Any) -> str:
    """An Atlantis-style note: outcome, link, and the plan table when the run returned one."""
    lines = [f"#### socialnet-ops: `{run_name}` {outcome}", ""]
    if url:
        lines += [f"[Prefect run]({url})", ""]
    summary = _result_summary(state) if outcome == "succeeded" else None
    if summary:
        if "status" in summary:
            lines += [f"**{flow_name}**: {summary['status']}", ""]
        rows = summary.get("plan")
        if isinstance(rows, list) and rows and all(isinstance(row, Mapping) for row in rows):
            columns = list(rows[0])
            lines.append("| " + " | ".join(columns) + " |")
            lines.append("|" + " --- |" * len(columns))
            for row in rows:
                lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
        elif isinstance(rows, list):
            lines.append("No changes.")
    elif outcome != "succeeded" and getattr(state, "message", None):
        lines.append(f"> {str(state.message)[:500]}")
    return "\n".join(lines)


StateHook = FlowStateHook[..., Any]


class GitLabHooks(TypedDict):
    on_running: list[StateHook]
    on_completion: list[StateHook]
    on_failure: list[StateHook]
    on_crashed: list[StateHook]
    on_cancellation: list[StateHook]


def _hook(
    commit_state: CommitState, outcome: str, notes: bool = True, subflows: bool = True
) -> StateHook:
    def report(flow: Any, flow_run: Any, state: Any) -> None:
        if not subflows and getattr(flow_run, "parent_task_run_id", None) is not None:
            return  # its parent reports itself, under the same commit status name
        context = run_gitlab_context(flow_run)
        if context is None:
            return
        url = flow_run_url(flow_run.id)
        description = f"{flow_run.name} {outcome}"
        if commit_state == "failed" and getattr(state, "message", None):
            description += f": {state.message}"
        report_commit_status(
            context["project_id"],
            context["sha"],
            commit_state,
            target_url=url,
            description=description,
            name=context.get("status_name", f"socialnet-ops/{flow.name}"),
            ref=context.get("ref") or None,
        )
        if notes and context.get("merge_request_iid") and commit_state != "running":
            post_merge_request_note(
                context["project_id"],
                context["merge_request_iid"],
                note_body(flow.name, flow_run.name, outcome, url, state),
            )

    report.__name__ = f"report_{commit_state}_to_gitlab"
    return report


def gitlab_status_hooks(notes: bool = True, subflows: bool = True) -> GitLabHooks:
    """State hooks reporting a run started from GitLab back to its commit (and merge request).

    Keyword arguments for `@flow(...)`, merged with a flow's own hooks, e.g.::

        hooks = gitlab_status_hooks()
        @flow(on_running=hooks["on_running"], on_completion=hooks["on_completion"],
              on_failure=[announce_release_failure, *hooks["on_failure"]],
              on_crashed=hooks["on_crashed"], on_cancellation=hooks["on_cancellation"])

    Runs without GitLab context (no `gitlab` parameter, no `gitlab.*` tags) are left alone.
    `notes=False`: commit statuses only, for flows that write their merge request note themselves
    (the Terraform plan note, edited in place). `subflows=False`: only a run of its own reports
    (provision inside a release must not report for the release).
    """
    return {
        "on_running": [_hook("running", "is running", notes, subflows)],
        "on_completion": [_hook("success", "succeeded", notes, subflows)],
        "on_failure": [_hook("failed", "failed", notes, subflows)],
        "on_crashed": [_hook("failed", "crashed", notes, subflows)],
        "on_cancellation": [_hook("canceled", "was cancelled", notes, subflows)],
    }


def attach_gitlab_status_hooks(flow: Any) -> Any:
    """Append the GitLab hooks to an existing flow object (keeps its own hooks); returns it."""
    for key, hooks in gitlab_status_hooks().items():
        getattr(flow, f"{key}_hooks").extend(hooks)  # e.g. flow.on_running_hooks
    return flow
