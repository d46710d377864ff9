"""Merge request commands and stack locks at the receiver, against the real Prefect server and the
GitLab API stand-in: note commands start the runs the mapping says (with numbers where the
deployment's schema wants them), what starts nothing is answered on the merge request, and a
merge, a close or `socialnet-ops unlock` releases exactly the merge request's own locks.

The runs themselves (plan, apply) are tested against real Terraform in
tests/integration/terraform/test_provision.py.
"""

from __future__ import annotations

import pytest
from prefect.variables import Variable

from socialnet_ops.core.stack_locks import StackLock, lock_variable
from tests.integration.webhooks import payloads
from tests.integration.webhooks.conftest import Receiver, delivery
from tests.integration.webhooks.fake_gitlab import FakeGitLab

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

STAGING = "infrastructure/terraform/stacks/staging/main.tf"
PRODUCTION = "infrastructure/terraform/stacks/production/main.tf"


async def hold(environment: str, iid: int, project_id: int = payloads.PROJECT_ID) -> None:
    lock = StackLock(
        environment=environment,
        project_id=project_id,
        merge_request=iid,
        taken_at="2026-01-01T10:00:00+00:00",
    )
    await Variable.aset(lock_variable(environment), lock.model_dump(mode="json"), overwrite=True)


async def holder(environment: str) -> int | None:
    value = await Variable.aget(lock_variable(environment), default=None)
    return StackLock.model_validate(value).merge_request if isinstance(value, dict) else None


async def test_apply_on_a_merge_request_starts_mr_apply_for_each_stack_it_touches(
    receiver: Receiver, fake_gitlab: FakeGitLab
) -> None:
    sha, event_id = payloads.new_sha(), delivery()
    fake_gitlab.diffs[41] = [STAGING, PRODUCTION, "app/api/main.py"]
    response = await receiver.deliver(
        "note", payloads.note(41, sha, "socialnet-ops apply"), event_id
    )
    assert response.status_code == 202, response.text
    assert response.json()["rules"] == ["terraform-apply-command"]
    runs = await receiver.runs(event_id)
    assert sorted(run.parameters["env"] for run in runs) == ["production", "staging"]
    for run in runs:
        # Integers: the deployment's schema would refuse "41" (enforce_parameter_schema).
        assert (run.parameters["merge_request"], run.parameters["project_id"]) == (
            41,
            payloads.PROJECT_ID,
        )
        assert {"gitlab.event:note", "gitlab.merge_request_iid:41", f"gitlab.sha:{sha}"} <= set(
            run.tags
        )
    names = sorted(status["name"] for status in fake_gitlab.statuses(sha))
    assert names == ["socialnet-ops/mr-apply-production", "socialnet-ops/mr-apply-staging"]


async def test_plan_on_a_merge_request_plans_its_head_again(
    receiver: Receiver, fake_gitlab: FakeGitLab
) -> None:
    sha, event_id = payloads.new_sha(), delivery()
    fake_gitlab.diffs[42] = [PRODUCTION]
    await receiver.deliver(
        "note", payloads.note(42, sha, "socialnet-ops plan production"), event_id
    )
    (run,) = await receiver.runs(event_id)
    assert run.parameters == {
        "env": "production",
        "apply_changes": False,
        "ref": sha,
        "merge_request": 42,
        "project_id": payloads.PROJECT_ID,
    }


async def test_a_command_for_a_stack_not_touched_is_answered_on_the_merge_request(
    receiver: Receiver, fake_gitlab: FakeGitLab
) -> None:
    event_id = delivery()
    fake_gitlab.diffs[43] = [PRODUCTION]
    await receiver.deliver(
        "note", payloads.note(43, payloads.new_sha(), "socialnet-ops apply staging"), event_id
    )
    assert await receiver.runs(event_id) == []
    fake_gitlab.wait_for(lambda: fake_gitlab.notes(43))
    assert fake_gitlab.notes(43) == [
        "socialnet-ops apply: !43 does not touch the stack of `staging`: nothing to apply"
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (payloads.note(44, payloads.new_sha(), "LGTM, thanks"), "not a socialnet-ops command"),
        (
            payloads.note(44, payloads.new_sha(), "socialnet-ops apply", action="update"),
            "not a socialnet-ops command",
        ),
        (
            payloads.note(44, payloads.new_sha(), "socialnet-ops apply", noteable_type="Issue"),
            "the note on no merge request",
        ),
    ],
)
async def test_other_notes_are_ignored(
    receiver: Receiver, fake_gitlab: FakeGitLab, body: dict, reason: str
) -> None:
    event_id = delivery()
    response = await receiver.deliver("note", body, event_id)
    assert response.status_code == 202
    assert response.json()["status"] == "ignored" and reason in response.json()["reason"]
    assert await receiver.runs(event_id) == []
    assert fake_gitlab.calls == []


async def test_merge_close_and_unlock_release_only_the_merge_requests_own_locks(
    receiver: Receiver, fake_gitlab: FakeGitLab
) -> None:
    await hold("staging", 51)
    await hold("production", 51)
    await hold("technical", 52)
    try:
        merged = await receiver.deliver(
            "merge_request", payloads.merge_request(51, payloads.new_sha(), "merge"), delivery()
        )
        assert merged.status_code == 202
        assert merged.json()["status"] == "ignored"  # no run: the receiver did it itself
        assert merged.json()["released_locks"] == ["production", "staging"]
        assert (await holder("staging"), await holder("production")) == (None, None)
        assert await holder("technical") == 52
        await receiver.launcher.drain()
        assert fake_gitlab.notes(51) == [
            "socialnet-ops: !51 merged: released the lock of `production`, `staging`; other "
            "merge requests can plan them now"
        ]

        again = await receiver.deliver(
            "merge_request", payloads.merge_request(51, payloads.new_sha(), "close"), delivery()
        )
        assert "released_locks" not in again.json()

        unlocked = await receiver.deliver(
            "note", payloads.note(52, payloads.new_sha(), "socialnet-ops unlock"), delivery()
        )
        assert unlocked.json()["released_locks"] == ["technical"]
        assert await holder("technical") is None
    finally:
        for environment in ("staging", "production", "technical"):
            await Variable.aunset(lock_variable(environment))
