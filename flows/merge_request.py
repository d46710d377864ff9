"""Merge requests, Atlantis-style: a plan of the merge request's head for each stack it touches,
and the apply of exactly that plan from a note command.

- Plan (`provision` with `merge_request`, started by the gitflow rules `terraform-plan` on a push
  to the merge request and `terraform-plan-command` on `socialnet-ops plan`): take the stack's
  lock (or re-use this merge request's own; another's refuses the plan and says "locked by !N"),
  plan the head commit's tree in the merge request's own working copy (`mr-<iid>`), check the
  policies of the target branch (a merge request cannot weaken its judges) on the plan's JSON, keep the plan file where every worker finds it, record
  the plan (commit, digest, findings) in the lock and write the merge request's note for the
  stack: one note, edited in place by every later plan.
- Apply (`mr-apply`, started by `socialnet-ops apply [env]`): accepted only when GitLab says the
  merge request is open, approved and mergeable, its head is the commit planned, the policies
  passed and the plan was not applied yet; then the saved plan file (same sha256) is applied,
  inside the environment's release slot. A refusal is one line, posted as a reply, and changes
  nothing. The result is the plan note's status line.

Locks are released by the webhook receiver when the merge request is merged or closed
(webhooks/locks.py).
"""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from flows.common import StepClock, checked_environment, checked_source, release_slot
from socialnet_ops.core.failures import before_any_change, mark_unchanged, one_line
from socialnet_ops.core.merge_requests import (
    ApplyRefusedError,
    MergeRequestApplyResult,
    PlanRefusedError,
    applied_status,
    apply_refusals,
    failed_note,
    locked_note,
    plan_note,
    plan_object_key,
    refusal_line,
    replan_hint,
    workspace_use,
)
from socialnet_ops.core.results import ProvisionResult
from socialnet_ops.core.stack_locks import KEPT_FINDINGS, PlanRecord, StackLock, short
from socialnet_ops.core.terraform import Plan, PlanSummary, TerraformError
from tasks.gitlab import (
    flow_run_url,
    gitlab_status_hooks,
    merge_request_state,
    post_merge_request_note_task,
    set_plan_note_status,
    write_plan_note,
)
from tasks.policies import check_policies
from tasks.reporting import publish
from tasks.stack_locks import (
    claim_stack_lock,
    now,
    read_lock,
    read_stack_lock,
    record_apply,
    record_plan,
)
from tasks.terraform import (
    apply,
    describe_applied,
    ensure_state_bucket,
    fetch_plan,
    init,
    plan,
    preflight,
    publish_plan,
    read_outputs,
    store_infra_state,
    store_plan,
    validate,
    workspace_in_use,
)


def _run_url() -> str | None:
    run_id = flow_run.get_id()
    return flow_run_url(run_id) if run_id else None


def plan_merge_request(
    env: str,
    ref: str | None,
    merge_request: int,
    project_id: int | None,
    endpoint: str | None,
    lock_timeout: str,
) -> ProvisionResult:
    """The plan of merge request !`merge_request`'s head `ref` for `env` (inside provision)."""
    with before_any_change():
        if ref is None or project_id is None:
            raise PlanRefusedError(
                f"{env}: a merge request plan needs ref (its head commit) and project_id "
                f"(got ref={ref!r}, project_id={project_id!r})"
            )
        state = merge_request_state(project_id, merge_request)
        if state.state != "opened":
            raise PlanRefusedError(f"{env}: !{merge_request} is {state.state}: nothing to plan")
    source = checked_source(ref)
    sha = source.sha or ref
    decided = claim_stack_lock(env, project_id, merge_request)
    if not decided.granted:
        write_plan_note(project_id, merge_request, env, locked_note(env, decided.lock, sha))
        raise PlanRefusedError(decided.refusal())
    code, use, clock = str(source.root), workspace_use(merge_request), StepClock()
    try:
        with workspace_in_use(env, use):
            with clock("init"):
                resolved = preflight(env, endpoint, use=use, source=code)
                ensure_state_bucket(env, resolved)
                init(env, resolved, use=use, source=code)
                validate(env, use=use)
            with clock("plan"):
                saved = plan(env, resolved, use=use, lock_timeout=lock_timeout)
                publish_plan(saved, f"Terraform plan of {env} for !{merge_request} at {short(sha)}")
            with clock("policies"):
                # The rules of the branch it merges into: a merge request cannot weaken the
                # policies that judge it.
                rules = checked_source(state.target_branch)
                verdict = check_policies(env, saved.document, str(rules.root), sha)
            key = plan_object_key(env, merge_request)
            digest = store_plan(env, resolved, saved.plan_file, key)
        record = PlanRecord(
            sha=sha,
            planned_at=now(),
            status=saved.status,
            headline=saved.summary.headline(),
            plan_digest=digest,
            plan_object=key,
            policy_failures=len(verdict.findings),
            policy_findings=verdict.lines()[:KEPT_FINDINGS],
            flow_run_id=str(flow_run.get_id()) if flow_run.get_id() else None,
        )
        record_plan(env, project_id, merge_request, record)
    except Exception as error:
        write_plan_note(
            project_id, merge_request, env, failed_note(env, sha, one_line(error), _run_url())
        )
        raise
    rows = saved.summary.rows()
    body = plan_note(
        env, merge_request, sha, record.headline, rows, verdict, _run_url(), record.planned_at
    )
    write_plan_note(project_id, merge_request, env, body)
    return publish(
        ProvisionResult(
            environment=env,
            flow_run_id=flow_run.get_id(),
            status=saved.status,
            plan=rows,
            changes=saved.summary.counts,
            outputs=None,
            seconds=clock.seconds,
        )
    )


def checked_apply(env: str, merge_request: int, project_id: int) -> StackLock:
    """The lock holding the plan to apply, or a refusal (one line, posted as a reply)."""
    with before_any_change():
        state = merge_request_state(project_id, merge_request)
        lock = read_stack_lock(env)
        reasons = apply_refusals(env, lock, project_id, state)
        if reasons:
            line = refusal_line("apply", env, merge_request, reasons)
            post_merge_request_note_task(project_id, merge_request, line)
            raise ApplyRefusedError(line)
    assert lock is not None and lock.plan is not None  # apply_refusals says so otherwise
    return lock


_hooks = gitlab_status_hooks(notes=False, subflows=False)


@flow(
    name="mr-apply",
    flow_run_name="mr-apply-{env}-{merge_request}",
    on_running=list(_hooks["on_running"]),
    on_completion=list(_hooks["on_completion"]),
    on_failure=list(_hooks["on_failure"]),
    on_crashed=list(_hooks["on_crashed"]),
    on_cancellation=list(_hooks["on_cancellation"]),
)
def apply_merge_request(
    env: str,
    merge_request: int,
    project_id: int,
    endpoint: str | None = None,
    lock_timeout: str = "120s",
) -> MergeRequestApplyResult:
    """Apply exactly the plan merge request !`merge_request` saved for `env` (the note command
    `socialnet-ops apply`); refused, changing nothing, unless GitLab says it is approved and
    mergeable and its head is the commit planned. Runs inside the environment's release slot."""
    checked_environment(env)
    clock = StepClock()
    with clock("checks"):
        lock = checked_apply(env, merge_request, project_id)
    record = lock.plan
    assert record is not None
    source = checked_source(record.sha)
    code, use = str(source.root), workspace_use(merge_request)
    with release_slot(env), workspace_in_use(env, use):
        with before_any_change():
            if read_lock(env) != lock:  # re-planned or released while this run waited
                line = refusal_line(
                    "apply", env, merge_request, ["the plan changed while this apply waited"]
                )
                post_merge_request_note_task(project_id, merge_request, line)
                raise ApplyRefusedError(line)
            with clock("init"):
                resolved = preflight(env, endpoint, use=use, source=code)
                init(env, resolved, use=use, source=code)
                plan_file = fetch_plan(env, resolved, use, record.plan_object, record.plan_digest)
        try:
            with clock("apply"):
                _apply_saved(env, merge_request, record, plan_file, resolved, use, lock_timeout)
        except ApplyRefusedError as refusal:
            post_merge_request_note_task(project_id, merge_request, str(refusal))
            raise
        except Exception as error:
            set_plan_note_status(
                project_id, merge_request, env, f"apply failed ({_link()}): {one_line(error)}"
            )
            raise
        record_apply(env, project_id, merge_request, str(flow_run.get_id()))
        with clock("outputs"):
            applied = describe_applied(env, resolved, record.sha, use=use)
            store_infra_state(env, read_outputs(env, resolved, use=use), applied)
    set_plan_note_status(
        project_id,
        merge_request,
        env,
        applied_status(record.sha, record.headline, now(), _run_url()),
    )
    return publish(
        MergeRequestApplyResult(
            environment=env,
            flow_run_id=flow_run.get_id(),
            merge_request=merge_request,
            commit=record.sha,
            headline=record.headline,
            serial=applied.get("serial"),
            seconds=clock.seconds,
        )
    )


def _link() -> str:
    url = _run_url()
    return f"[Prefect run]({url})" if url else "Prefect run"


def _apply_saved(
    env: str,
    merge_request: int,
    record: PlanRecord,
    plan_file: str,
    endpoint: str | None,
    use: str,
    lock_timeout: str,
) -> None:
    """`terraform apply PLANFILE`; a plan Terraform finds stale (the state changed since) is
    refused before it changes anything."""
    saved = Plan(env, record.status, PlanSummary(), plan_file)
    try:
        apply(saved, endpoint, use=use, lock_timeout=lock_timeout)
    except TerraformError as error:
        if "Saved plan is stale" not in str(error):
            raise
        raise mark_unchanged(
            ApplyRefusedError(
                refusal_line(
                    "apply",
                    env,
                    merge_request,
                    [
                        f"the state changed since the plan of {short(record.sha)} (something "
                        f"else applied); {replan_hint(env)}"
                    ],
                )
            )
        ) from None
