"""Merge requests, Atlantis-style, the pure parts: note commands, stack lock decisions, whether a
saved plan may be applied, the notes, and the gitflow rules of note commands."""

from __future__ import annotations

from typing import Any

import pytest

from socialnet_ops.core.gitflow import (
    GitEvent,
    GitflowMapping,
    command_starts_nothing,
    launches,
    load_mapping,
    matching_rules,
    releases_stack_locks,
)
from socialnet_ops.core.merge_requests import (
    MergeRequestState,
    NoteCommand,
    applied_status,
    apply_refusals,
    locked_note,
    note_marker,
    parse_command,
    plan_note,
    refusal_line,
    with_status,
)
from socialnet_ops.core.policies import PolicyFinding, PolicyVerdict
from socialnet_ops.core.stack_locks import (
    PlanRecord,
    StackLock,
    claim,
    releases,
    with_apply,
    with_plan,
)
from tests.integration.webhooks import payloads
from webhooks.gitlab import parse_event

pytestmark = pytest.mark.unit

SHA = "3f1c2a9b7d4e5f60718293a4b5c6d7e8f9012345"
NEWER = "9a8b7c6d5e4f30211203948576a5b4c3d2e1f0a9"
PROJECT = 42
NOW = "2026-01-01T10:00:00+00:00"


# --- commands ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("note", "command"),
    [
        ("socialnet-ops apply", NoteCommand("apply")),
        ("socialnet-ops apply staging", NoteCommand("apply", "staging")),
        ("  socialnet-ops   plan production  \nplease", NoteCommand("plan", "production")),
        ("socialnet-ops unlock", NoteCommand("unlock")),
        ("socialnet-ops apply Staging", None),  # environments are lowercase names
        ("socialnet-ops aply", None),
        ("socialnet-ops apply staging now", None),
        ("please run socialnet-ops apply", None),
        ("LGTM", None),
        ("", None),
        # Our own plan note only mentions the command: never a command.
        (f"{note_marker('staging')}\n#### Terraform plan\n`socialnet-ops apply staging`", None),
    ],
)
def test_a_command_is_the_whole_first_line_of_a_note(
    note: str, command: NoteCommand | None
) -> None:
    assert parse_command(note) == command


def test_a_note_hook_becomes_a_command_event_only_on_a_merge_request() -> None:
    event = parse_event("note", payloads.note(7, SHA, "socialnet-ops apply staging"), "d")
    assert (event.kind, event.merge_request_iid, event.sha) == ("note", 7, SHA)
    assert (event.command, event.command_environment) == ("apply", "staging")
    assert event.target_branch == "develop" and event.author == "grace"
    edited = parse_event("note", payloads.note(7, SHA, "socialnet-ops apply", action="update"), "d")
    assert edited.command is None, "editing an old command must not run it again"
    on_an_issue = parse_event(
        "note", payloads.note(7, SHA, "socialnet-ops apply", noteable_type="Issue"), "d"
    )
    assert on_an_issue.merge_request_iid is None and on_an_issue.command is None


@pytest.fixture(scope="module")
def mapping() -> GitflowMapping:
    return load_mapping()


def note_event(command: str | None, environment: str | None = None) -> GitEvent:
    return GitEvent(
        kind="note",
        delivery_id="d-1",
        project_id=PROJECT,
        sha=SHA,
        branch="feature/x",
        target_branch="develop",
        merge_request_iid=7,
        command=command,
        command_environment=environment,
    )


STACKS = {
    "staging": "infrastructure/terraform/stacks/staging",
    "production": "infrastructure/terraform/stacks/production",
    "technical": "infrastructure/terraform/stacks/technical",
}


def test_apply_starts_mr_apply_for_each_stack_touched_with_numbers(
    mapping: GitflowMapping,
) -> None:
    event = note_event("apply")
    (rule,) = matching_rules(mapping, event)[0]
    changed = [f"{STACKS['staging']}/main.tf", f"{STACKS['production']}/main.tf"]
    planned = launches(mapping, rule, event, changed, STACKS)
    assert [(p.deployment, p.parameters) for p in planned] == [
        (
            f"mr-apply/mr-apply-{env}",
            {"env": env, "merge_request": 7, "project_id": PROJECT},
        )
        for env in ("staging", "production")
    ]
    assert planned[0].idempotency_key == "gitlab:note:d-1:mr-apply/mr-apply-staging"
    assert "gitlab.merge_request_iid:7" in planned[0].tags
    named = launches(mapping, rule, note_event("apply", "production"), changed, STACKS)
    assert [p.environment for p in named] == ["production"]


def test_plan_on_a_note_plans_the_head_again(mapping: GitflowMapping) -> None:
    event = note_event("plan")
    (rule,) = matching_rules(mapping, event)[0]
    (launch,) = launches(mapping, rule, event, [f"{STACKS['technical']}/x.tf"], STACKS)
    assert launch.deployment == "provision/provision-technical"
    assert launch.parameters == {
        "env": "technical",
        "apply_changes": False,
        "ref": SHA,
        "merge_request": 7,
        "project_id": PROJECT,
    }


def test_notes_that_are_not_commands_start_nothing_and_say_why(mapping: GitflowMapping) -> None:
    rules, reason = matching_rules(mapping, note_event(None))
    assert rules == [] and reason == "the note on !7 is not a socialnet-ops command"
    rules, reason = matching_rules(mapping, note_event("unlock"))
    assert rules == [] and "'unlock' on !7" in reason  # the receiver handles it, no run


def test_a_command_that_touches_nothing_is_answered(mapping: GitflowMapping) -> None:
    (rule,) = matching_rules(mapping, note_event("apply"))[0]
    assert "not a stack this command works on" in command_starts_nothing(
        rule, note_event("apply", "local")
    )
    assert "does not touch the stack of `staging`: nothing to apply" in command_starts_nothing(
        rule, note_event("apply", "staging")
    )
    assert "touches no stack of staging, production, technical" in command_starts_nothing(
        rule, note_event("apply")
    )


@pytest.mark.parametrize(
    ("kind", "fields", "releases_them"),
    [
        ("merge_request", {"action": "merge"}, True),
        ("merge_request", {"action": "close"}, True),
        ("merge_request", {"action": "update"}, False),
        ("note", {"command": "unlock"}, True),
        ("note", {"command": "apply"}, False),
    ],
)
def test_merge_close_and_unlock_release_the_locks(
    kind: str, fields: dict[str, Any], releases_them: bool
) -> None:
    event = GitEvent(
        kind=kind, delivery_id="d", project_id=PROJECT, sha=SHA, merge_request_iid=7, **fields
    )
    assert releases_stack_locks(event) is releases_them


# --- locks ---------------------------------------------------------------------------------------


def record(sha: str = SHA, **changes: Any) -> PlanRecord:
    base: dict[str, Any] = {
        "sha": sha,
        "planned_at": NOW,
        "status": "changes",
        "headline": "1 to add, 0 to change, 0 to replace, 0 to destroy",
        "plan_digest": "ab" * 32,
        "plan_object": "socialnet-plans/staging/mr-7.tfplan",
    }
    return PlanRecord(**{**base, **changes})


def test_the_first_plan_takes_the_lock_and_the_holder_reuses_it() -> None:
    first = claim(None, "staging", PROJECT, 7, NOW)
    assert first.granted and first.lock.held_by(PROJECT, 7) and first.lock.plan is None
    planned = with_plan(first.lock, record())
    again = claim(planned, "staging", PROJECT, 7, "later")
    assert again.granted and again.lock.taken_at == NOW
    assert again.lock.plan is None, "a new plan drops the old one until it is recorded"


def test_another_merge_request_is_locked_out_naming_the_holder() -> None:
    held = with_plan(claim(None, "staging", PROJECT, 7, NOW).lock, record())
    refused = claim(held, "staging", PROJECT, 8, "later")
    assert not refused.granted and refused.lock == held
    assert refused.refusal().startswith(
        f"staging: locked by !7 (planned {SHA[:8]} at {NOW}); it is freed when !7 is merged"
    )
    assert releases(held, PROJECT, 7) and not releases(held, PROJECT, 8)
    assert not releases(None, PROJECT, 7)
    assert not releases(held, 43, 7), "the same iid in another project is another merge request"


# --- apply ---------------------------------------------------------------------------------------


def state(sha: str = SHA, **changes: Any) -> MergeRequestState:
    base: dict[str, Any] = {
        "iid": 7,
        "sha": sha,
        "state": "opened",
        "detailed_merge_status": "mergeable",
        "approved": True,
    }
    return MergeRequestState(**{**base, **changes})


def locked(plan: PlanRecord | None = None, iid: int = 7) -> StackLock:
    lock = claim(None, "staging", PROJECT, iid, NOW).lock
    return with_plan(lock, plan) if plan else lock


def test_an_approved_mergeable_merge_request_applies_the_plan_of_its_head() -> None:
    assert apply_refusals("staging", locked(record()), PROJECT, state()) == []


@pytest.mark.parametrize(
    ("lock", "merge_request", "reasons"),
    [
        (
            locked(record()),
            state(approved=False, detailed_merge_status="not_approved"),
            ["!7 is not approved", "!7 is not mergeable (GitLab: not_approved)"],
        ),
        (
            locked(record()),
            state(detailed_merge_status="conflict"),
            ["!7 is not mergeable (GitLab: conflict)"],
        ),
        (
            locked(record()),
            state(NEWER),
            [
                f"the head moved to {NEWER[:8]} since the plan of {SHA[:8]}; re-plan: push or "
                "comment `socialnet-ops plan staging`"
            ],
        ),
        (
            locked(record(policy_failures=2)),
            state(),
            ["2 policy findings block apply (listed in the plan note)"],
        ),
        (None, state(), ["no plan of staging for !7"]),
        (locked(record(), iid=8), state(), ["no plan of staging for !7 (staging is locked by !8)"]),
        (
            locked(),
            state(),
            [
                "no saved plan of staging for !7 (the last plan failed or is still running): "
                "comment `socialnet-ops plan staging`"
            ],
        ),
        (
            locked(record(status="clean")),
            state(),
            [f"the plan of {SHA[:8]} has no changes: nothing to apply"],
        ),
        (locked(record()), state(state="merged"), ["!7 is merged"]),
    ],
)
def test_refusals_say_everything_to_fix(
    lock: StackLock | None, merge_request: MergeRequestState, reasons: list[str]
) -> None:
    assert apply_refusals("staging", lock, PROJECT, merge_request) == reasons


def test_a_plan_is_applied_once() -> None:
    applied = with_apply(locked(record()), NOW, "run-1")
    [reason] = apply_refusals("staging", applied, PROJECT, state())
    assert reason.startswith(f"the plan of {SHA[:8]} was applied at {NOW}; re-plan")
    line = refusal_line("apply", "staging", 7, ["!7 is not approved", "!7 is not mergeable"])
    assert line == (
        "socialnet-ops apply staging on !7 refused: !7 is not approved; !7 is not mergeable"
    )


# --- notes ---------------------------------------------------------------------------------------

ROWS = [{"address": "aws_route53_record.txt", "action": "create", "attributes": ""}]
PASSED = PolicyVerdict(source="infrastructure/policies at 3f1c2a9b", rules=["encryption", "tags"])
FAILED = PolicyVerdict(
    source="infrastructure/policies at 3f1c2a9b",
    rules=["encryption", "ssh_ingress"],
    findings=[PolicyFinding(rule="ssh_ingress", address="aws_security_group.debug", message="22")],
)


def test_the_plan_note_shows_commit_changes_policies_lock_and_how_to_apply() -> None:
    note = plan_note("staging", 7, SHA, "1 to add", ROWS, PASSED, "http://ui/runs/1", NOW)
    assert note.startswith(note_marker("staging"))
    assert f"#### Terraform plan of `staging` at `{SHA[:8]}`" in note
    assert "**Status:** planned, not applied" in note
    assert "| `aws_route53_record.txt` | `create` |  |" in note
    assert "2 rule sets passed (encryption, tags)" in note
    assert "!7 holds the lock of `staging`" in note
    assert "comment `socialnet-ops apply staging`" in note
    assert "[Prefect run](http://ui/runs/1)" in note
    assert parse_command(note) is None


def test_findings_are_listed_and_the_note_says_the_plan_cannot_be_applied() -> None:
    note = plan_note("staging", 7, SHA, "1 to add", ROWS, FAILED, None, NOW)
    assert "- :x: ssh_ingress: aws_security_group.debug: 22" in note
    assert "cannot be applied" in note and "socialnet-ops apply staging" not in note


def test_the_status_line_changes_and_the_plan_stays() -> None:
    note = plan_note("staging", 7, SHA, "1 to add", ROWS, PASSED, None, NOW)
    applied = with_status(note, "staging", applied_status(SHA, "1 to add", NOW, None))
    assert f"**Status:** applied {SHA[:8]} at {NOW} (Prefect run): 1 to add" in applied
    assert "planned, not applied" not in applied
    assert applied.replace(applied.splitlines()[3], "") == note.replace(note.splitlines()[3], "")
    fresh = with_status(None, "staging", "applied")
    assert fresh.startswith(note_marker("staging")) and "**Status:** applied" in fresh


def test_the_locked_out_note_names_the_holder() -> None:
    holder = with_plan(claim(None, "staging", PROJECT, 7, NOW).lock, record())
    note = locked_note("staging", holder, NEWER)
    assert note.startswith(note_marker("staging"))
    assert f"locked by !7 (planned {SHA[:8]} at {NOW})" in note
