"""Drill: GitLab delivers the same push 50 times during a release.

GitLab retries a delivery it thinks was lost and lets people resend it, so the same push (same
X-Gitlab-Event-UUID) can arrive many times, while its run is being created and while it runs.
Every copy must be answered 202, all of them must map to one flow run, a copy arriving while the
run is in progress must neither start anything nor move its commit status backwards, and a
different delivery afterwards still starts its own run.

The receiver runs in-process against the session's real Prefect server (the webhook suite's
fixtures); the deployment has no work pool, so the test moves the run to Running itself, through
the same state proposals a worker and the flow engine make.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Collection
from typing import TypeVar
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.states import Pending, Running

from tests.integration.webhooks import payloads
from tests.integration.webhooks.conftest import Receiver
from tests.integration.webhooks.fake_gitlab import FakeGitLab

pytestmark = [pytest.mark.integration, pytest.mark.asyncio, pytest.mark.timeout(180)]

COPIES = 50
BURST = 25  # copies sent at once: the launcher's workers race to create the same run
GAP_S = 0.06  # then one copy per gap (longer than the launcher waits for a burst to end), so copies
# also arrive while the run is being created and after it exists
WAIT_S = 60.0
DEPLOYMENT = "release/release-staging"
T = TypeVar("T")


async def bounded(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, WAIT_S)


async def deliver_copies(receiver: Receiver, body: dict, event_id: str) -> list[httpx.Response]:
    """COPIES concurrent deliveries of the same event: a burst, then the rest one by one."""

    async def one(index: int) -> httpx.Response:
        await asyncio.sleep(max(0, index - BURST + 1) * GAP_S)
        return await receiver.deliver("push", body, event_id)

    return await bounded(asyncio.gather(*(one(index) for index in range(COPIES))))


def assert_all_accepted(replies: list[httpx.Response], event_id: str, sha: str) -> None:
    assert len(replies) == COPIES
    answers = {(reply.status_code, reply.text) for reply in replies}
    assert len(answers) == 1, f"the copies were not answered alike: {answers}"
    reply = replies[0]
    assert reply.status_code == 202
    assert reply.json()["status"] == "accepted"
    assert (reply.json()["delivery"], reply.json()["sha"]) == (event_id, sha)
    assert reply.json()["planned"] == [DEPLOYMENT]


async def runs_of(deployment_ids: Collection[UUID]) -> list[FlowRun]:
    async with get_client() as client:
        return await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=list(deployment_ids))
            )
        )


async def read(flow_run_id: UUID) -> FlowRun:
    async with get_client() as client:
        return await client.read_flow_run(flow_run_id)


async def start_running(run: FlowRun) -> None:
    """What a worker (Pending) and then the flow engine (Running) propose."""
    async with get_client() as client:
        states: list[State[None]] = [Pending(), Running()]
        for state in states:
            result = await client.set_flow_run_state(run.id, state)
            assert result.state is not None and result.state.type == state.type, result.details


async def test_fifty_copies_of_a_push_during_its_release_start_one_run(
    receiver: Receiver, fake_gitlab: FakeGitLab, webhook_deployments: dict[str, UUID]
) -> None:
    targets = webhook_deployments.values()  # every deployment a delivery could start
    before = {run.id for run in await runs_of(targets)}
    created: set[UUID] = set()
    sha, event_id = payloads.new_sha(), str(uuid.uuid4())
    body = payloads.push("develop", sha)
    try:
        # 1. The copies arrive while the run is being created.
        assert_all_accepted(await deliver_copies(receiver, body, event_id), event_id, sha)
        runs = await bounded(receiver.runs(event_id))
        created |= {run.id for run in runs}
        assert len(runs) == 1, f"{len(runs)} runs for one delivery"
        (run,) = runs
        assert run.deployment_id == webhook_deployments[DEPLOYMENT]
        assert run.parameters["ref"] == sha and run.parameters["gitlab"]["event_id"] == event_id
        started = [o for o in receiver.launcher.outcomes if o.delivery_id == event_id]
        assert len(started) == COPIES
        assert {(o.flow_run_id, o.error, o.refused) for o in started} == {(str(run.id), None, None)}
        new = {r.id for r in await runs_of(targets)} - before
        created |= new
        assert new == {run.id}, "a copy started something else"
        pending = fake_gitlab.statuses(sha)
        assert pending and {s["state"] for s in pending} == {"pending"}

        # 2. The release is in progress; the copies keep coming.
        await start_running(run)
        assert_all_accepted(await deliver_copies(receiver, body, event_id), event_id, sha)
        assert [r.id for r in await bounded(receiver.runs(event_id))] == [run.id]
        running = await read(run.id)
        assert running.state_type == StateType.RUNNING, "a copy disturbed the run in progress"
        started = [o for o in receiver.launcher.outcomes if o.delivery_id == event_id]
        assert len(started) == 2 * COPIES
        assert {(o.flow_run_id, o.error, o.refused) for o in started} == {(str(run.id), None, None)}
        assert {r.id for r in await runs_of(targets)} - before == {run.id}
        assert fake_gitlab.statuses(sha) == pending, "a copy moved the running commit status back"

        # 3. A different push afterwards is a new release: it starts its own run.
        next_sha, next_event = payloads.new_sha(), str(uuid.uuid4())
        reply = await receiver.deliver("push", payloads.push("develop", next_sha), next_event)
        assert reply.status_code == 202 and reply.json()["delivery"] == next_event
        (second,) = await bounded(receiver.runs(next_event))
        created.add(second.id)
        assert second.id != run.id and second.parameters["ref"] == next_sha
        assert {r.id for r in await runs_of(targets)} - before == {run.id, second.id}
        assert (await read(run.id)).state_type == StateType.RUNNING
        assert receiver.launcher.counts["failed"] == 0
    finally:
        # Leave the session's server as found: a Running run with no worker would linger.
        await bounded(receiver.launcher.drain())
        created |= {r.id for r in await runs_of(targets)} - before
        async with get_client() as client:
            for flow_run_id in created:
                await client.delete_flow_run(flow_run_id)
