"""The GitLab webhook receiver against the real Prefect server and a fake GitLab API."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest
from prefect.client.schemas.objects import StateType
from prefect.variables import Variable

from socialnet_ops.core.ledger import Ledger, ReleaseRecord
from tests.integration.webhooks import payloads
from tests.integration.webhooks.conftest import MAX_BODY, WEBHOOK_TOKEN, Receiver, delivery
from tests.integration.webhooks.fake_gitlab import FakeGitLab

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


async def test_a_push_to_develop_starts_deploy_staging_for_that_commit(
    receiver: Receiver, fake_gitlab: FakeGitLab
) -> None:
    sha, event_id = payloads.new_sha(), delivery()
    response = await receiver.deliver("push", payloads.push("develop", sha), event_id)
    assert response.status_code == 202
    assert response.json() == {
        "status": "accepted",
        "delivery": event_id,
        "rules": ["develop-to-staging"],
        "planned": ["release/release-staging"],
        "sha": sha,
        "ref": "develop",
    }
    (run,) = await receiver.runs(event_id)
    assert run.state_type == StateType.SCHEDULED
    assert run.parameters["env"] == "staging"
    assert run.parameters["version"] == f"develop-{sha[:8]}"
    assert run.parameters["ref"] == sha
    assert run.parameters["gitlab"] == {
        "project_id": str(payloads.PROJECT_ID),
        "project": payloads.PROJECT_PATH,
        "sha": sha,
        "ref": "develop",
        "author": "ada",
        "event": "push",
        "event_id": event_id,
        "status_name": "socialnet-ops/release-staging",
    }
    assert {
        f"gitlab.sha:{sha}",
        "gitlab.ref:develop",
        "gitlab.author:ada",
        f"gitlab.event_id:{event_id}",
        "gitflow:develop-to-staging",
    } <= set(run.tags)
    (status,) = fake_gitlab.statuses(sha)
    assert status["state"] == "pending"
    assert status["name"] == "socialnet-ops/release-staging"
    assert status["ref"] == "develop"
    assert status["target_url"].endswith(f"/runs/flow-run/{run.id}")


async def test_a_duplicate_delivery_starts_one_run(receiver: Receiver) -> None:
    sha, event_id = payloads.new_sha(), delivery()
    body = payloads.push("develop", sha)
    # GitLab's retry while the first is still in flight, then a manual "resend" later.
    first, second = await asyncio.gather(
        receiver.deliver("push", body, event_id), receiver.deliver("push", body, event_id)
    )
    assert first.status_code == second.status_code == 202
    await receiver.launcher.drain()
    third = await receiver.deliver("push", body, event_id)
    assert third.status_code == 202
    runs = await receiver.runs(event_id)
    assert len(runs) == 1
    started = [o.flow_run_id for o in receiver.launcher.outcomes if o.delivery_id == event_id]
    assert started == [str(runs[0].id)] * 3, "Prefect returned the same run for the same key"


async def test_the_idempotency_key_header_wins_over_the_event_uuid(receiver: Receiver) -> None:
    sha, key = payloads.new_sha(), delivery()
    body = payloads.push("develop", sha)
    for event_id in (delivery(), delivery()):  # a retry may carry a new event UUID, never a new key
        response = await receiver.deliver("push", body, event_id, headers={"Idempotency-Key": key})
        assert response.json()["delivery"] == key
    assert len(await receiver.runs(key)) == 1


async def test_without_ids_the_digest_of_the_body_dedupes(receiver: Receiver) -> None:
    body = json.dumps(payloads.push("develop", payloads.new_sha())).encode()
    keys = {(await receiver.deliver("push", body)).json()["delivery"] for _ in range(2)}
    (key,) = keys
    assert key.startswith("sha256-")
    assert len(await receiver.runs(key)) == 1


@pytest.mark.parametrize("token", [None, "", "wrong-token", "wh-" + "0" * 32])
async def test_a_bad_token_is_refused_and_starts_nothing(
    receiver: Receiver, token: str | None
) -> None:
    event_id = delivery()
    response = await receiver.deliver(
        "push", payloads.push("develop", payloads.new_sha()), event_id, token=token
    )
    assert response.status_code == 401
    assert "token" not in json.dumps(response.json()).lower().replace("x-gitlab-token", "")
    assert await receiver.runs(event_id) == []


async def test_malformed_json_is_400(receiver: Receiver) -> None:
    response = await receiver.deliver("push", b'{"object_kind": "push",', delivery())
    assert response.status_code == 400
    assert response.json()["error"].startswith("body is not valid JSON")
    response = await receiver.deliver("push", b"[1, 2]", delivery())
    assert (response.status_code, response.json()["error"]) == (400, "body must be a JSON object")


async def test_a_payload_missing_a_field_is_400_naming_it(receiver: Receiver) -> None:
    body = payloads.merge_request(9, payloads.new_sha())
    del body["object_attributes"]["last_commit"]
    response = await receiver.deliver("merge_request", body, delivery())
    assert response.status_code == 400
    assert (
        response.json()["error"]
        == "invalid Merge Request Hook payload: object_attributes.last_commit: missing"
    )


async def test_an_oversize_body_is_413_even_without_content_length(receiver: Receiver) -> None:
    body = payloads.push("develop", payloads.new_sha())
    body["padding"] = "x" * MAX_BODY
    event_id = delivery()
    assert (await receiver.deliver("push", body, event_id)).status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # chunked: no Content-Length to trust
        raw = json.dumps(body).encode()
        for start in range(0, len(raw), 8192):
            yield raw[start : start + 8192]

    response = await receiver.http.post(
        "/hooks/gitlab",
        content=chunks(),
        headers={
            "X-Gitlab-Event": "Push Hook",
            "X-Gitlab-Token": receiver_token(),
            "X-Gitlab-Event-UUID": event_id,
        },
    )
    assert response.status_code == 413
    assert await receiver.runs(event_id) == []


def receiver_token() -> str:
    from tests.integration.webhooks.conftest import WEBHOOK_TOKEN

    return WEBHOOK_TOKEN


async def test_wrong_method_is_405_and_healthz_answers(receiver: Receiver) -> None:
    assert (await receiver.http.get("/hooks/gitlab")).status_code == 405
    assert (await receiver.http.put("/hooks/gitlab", content=b"{}")).status_code == 405
    health = await receiver.http.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"


@pytest.mark.parametrize(
    ("kind", "body", "reason"),
    [
        ("Issue Hook", {"object_kind": "issue"}, "event 'Issue Hook' is not handled"),
        ("", {"object_kind": "push"}, "event '' is not handled"),
        ("push", payloads.push("feature/login", payloads.new_sha()), "branch 'feature/login'"),
        ("tag_push", payloads.tag_push("nightly", payloads.new_sha()), "tag 'nightly'"),
        ("push", payloads.push("develop", payloads.NULL_SHA), "was deleted"),
        ("pipeline", payloads.pipeline("main", payloads.new_sha(), "failed"), "(failed) on 'main'"),
        ("merge_request", payloads.merge_request(4, payloads.new_sha(), "merge"), "!4 (merge)"),
    ],
)
async def test_unknown_events_and_unmapped_refs_are_ignored(
    receiver: Receiver, fake_gitlab: FakeGitLab, kind: str, body: dict, reason: str
) -> None:
    event_id = delivery()
    response = await receiver.deliver(kind, body, event_id)
    assert response.status_code == 202
    assert response.json()["status"] == "ignored" and reason in response.json()["reason"]
    assert await receiver.runs(event_id) == []
    assert fake_gitlab.calls == []


async def set_staging_ledger(*shas: str) -> None:
    ledger = Ledger(environment="staging")
    for index, sha in enumerate(shas):
        ledger = ledger.with_stable(
            ReleaseRecord(version=f"develop-{index}", git_sha=sha, ref=sha, strategy="rolling")
        )
    await Variable.aset("ledger-staging", ledger.model_dump(mode="json"), overwrite=True)


async def test_a_tag_of_a_build_that_never_served_staging_is_refused_with_a_status(
    receiver: Receiver, fake_gitlab: FakeGitLab
) -> None:
    passed, serving, untested = payloads.new_sha(), payloads.new_sha(), payloads.new_sha()
    await set_staging_ledger(passed, serving)
    event_id = delivery()
    response = await receiver.deliver("tag_push", payloads.tag_push("v2.0.0", untested), event_id)
    # Said in the reply, which GitLab shows in its hook log; 2xx: a decision, not a failure.
    assert response.status_code == 200
    assert response.json() == {
        "status": "refused",
        "delivery": event_id,
        "rules": ["release-tag-to-production"],
        "reason": f"commit {untested[:8]} never served staging (it serves develop-1 "
        f"({serving[:8]})); deploy it to staging first",
        "sha": untested,
        "ref": "v2.0.0",
    }
    assert await receiver.runs(event_id) == []
    (status,) = fake_gitlab.statuses(untested)
    assert status["state"] == "failed" and status["name"] == "socialnet-ops/canary-production"
    assert f"commit {untested[:8]} never served staging" in status["description"]
    assert receiver.launcher.counts["refused"] >= 1

    # The commit that served staging (history, not only the current stable) is released.
    event_id = delivery()
    await receiver.deliver("tag_push", payloads.tag_push("v1.9.0", passed), event_id)
    (run,) = await receiver.runs(event_id)
    assert run.parameters["env"] == "production"
    assert (run.parameters["version"], run.parameters["ref"]) == ("v1.9.0", passed)
    assert "gitlab.ref:v1.9.0" in run.tags
    assert fake_gitlab.statuses(passed)[0]["state"] == "pending"


async def test_a_green_main_pipeline_deploys_the_candidate_to_staging(receiver: Receiver) -> None:
    sha, event_id = payloads.new_sha(), delivery()
    await receiver.deliver("pipeline", payloads.pipeline("main", sha), event_id)
    (run,) = await receiver.runs(event_id)
    assert (run.parameters["version"], run.parameters["ref"]) == (f"main-{sha[:8]}", sha)


async def test_a_merge_request_touching_terraform_plans_the_affected_stacks(
    receiver: Receiver, fake_gitlab: FakeGitLab
) -> None:
    sha, event_id = payloads.new_sha(), delivery()
    fake_gitlab.diffs[11] = [
        "infrastructure/terraform/stacks/staging/main.tf",
        "infrastructure/terraform/stacks/production/variables.tf",
        "app/api/main.py",
    ]
    response = await receiver.deliver("merge_request", payloads.merge_request(11, sha), event_id)
    assert response.json()["planned"] == [
        "provision/provision-<staging|production|technical touched>"
    ]
    runs = await receiver.runs(event_id)
    assert sorted(run.parameters["env"] for run in runs) == ["production", "staging"]
    for run in runs:
        assert run.parameters["apply_changes"] is False
        assert "gitlab" not in run.parameters, "provision has no gitlab parameter: tags carry it"
        assert {"gitlab.merge_request_iid:11", f"gitlab.sha:{sha}", "gitlab.author:grace"} <= set(
            run.tags
        )
    names = sorted(status["name"] for status in fake_gitlab.statuses(sha))
    assert names == ["socialnet-ops/provision-production", "socialnet-ops/provision-staging"]


async def test_a_merge_request_outside_terraform_plans_nothing(
    receiver: Receiver, fake_gitlab: FakeGitLab
) -> None:
    event_id = delivery()
    fake_gitlab.diffs[12] = ["app/api/main.py"]
    await receiver.deliver(
        "merge_request", payloads.merge_request(12, payloads.new_sha()), event_id
    )
    assert await receiver.runs(event_id) == []


async def test_a_deployment_missing_on_the_platform_is_a_failed_status(
    receiver: Receiver, fake_gitlab: FakeGitLab, receiver_log: pytest.LogCaptureFixture
) -> None:
    sha, event_id = payloads.new_sha(), delivery()
    fake_gitlab.diffs[13] = ["infrastructure/terraform/stacks/technical/main.tf"]
    async_client_missing = "provision/provision-technical"
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        deployment = await client.read_deployment_by_name(async_client_missing)
        await client.delete_deployment(deployment.id)
    try:
        response = await receiver.deliver(
            "merge_request", payloads.merge_request(13, sha), event_id
        )
        assert response.status_code == 202
        await receiver.launcher.drain()
        (status,) = fake_gitlab.statuses(sha)
        assert status["state"] == "failed"
        assert "provision/provision-technical is not registered" in status["description"]
        (failure,) = [r for r in receiver_log.records if "could not start" in r.getMessage()]
        assert failure.levelno == logging.WARNING and event_id in failure.getMessage()
        assert WEBHOOK_TOKEN not in receiver_log.text
    finally:
        async with get_client() as client:
            flow_id = await client.create_flow_from_name("provision")
            await client.create_deployment(flow_id=flow_id, name="provision-technical")


async def test_gitlab_being_down_does_not_stop_the_release(
    receiver: Receiver, fake_gitlab: FakeGitLab
) -> None:
    sha, event_id = payloads.new_sha(), delivery()
    fake_gitlab.fail_next(2, 503)
    await receiver.deliver("push", payloads.push("develop", sha), event_id)
    (run,) = await receiver.runs(event_id)
    assert run.state_type == StateType.SCHEDULED
    assert [s["state"] for s in fake_gitlab.statuses(sha)] == ["pending", "pending", "pending"]


async def test_shutdown_finishes_the_deliveries_already_accepted(receiver: Receiver) -> None:
    sha, event_id = payloads.new_sha(), delivery()
    await receiver.deliver("push", payloads.push("develop", sha), event_id)
    await receiver.launcher.stop()  # what uvicorn's shutdown runs, right after the reply
    (run,) = await receiver.runs(event_id)
    assert run.parameters["ref"] == sha


async def test_a_shutdown_that_cannot_wait_names_the_deliveries_to_redeliver(
    receiver: Receiver, receiver_log: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def stuck(_: object) -> None:  # a Prefect server that never answers
        await asyncio.Event().wait()

    monkeypatch.setattr(receiver.launcher, "_handle", stuck)
    event_ids = [delivery(), delivery()]
    for event_id in event_ids:
        await receiver.deliver("push", payloads.push("develop", payloads.new_sha()), event_id)
    await receiver.launcher.stop(drain_seconds=0.2)
    (warning,) = [r for r in receiver_log.records if "redeliver" in r.getMessage()]
    assert all(event_id in warning.getMessage() for event_id in event_ids)
