"""Issue #17, rule 3: what the receiver accepts it can honour, and what it refuses it says in the
reply (GitLab's hook log), in one line naming the problem and the field."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from socialnet_ops.control.status import webhook_notices
from tests.integration.webhooks import payloads
from tests.integration.webhooks.conftest import WEBHOOK_TOKEN, Receiver, delivery
from tests.integration.webhooks.fake_gitlab import FakeGitLab
from tests.integration.webhooks.test_receiver import set_staging_ledger
from webhooks.alerts import MAX_ALERT_BYTES
from webhooks.records import recent_notices

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


def error_of(response: Any) -> str:
    error = response.json()["error"]
    assert "\n" not in error and "\r" not in error, "one line"
    return str(error)


# --- 1. a commit is a 40-hex commit id ------------------------------------------------------------


def _with(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split(".")
    place = body
    for key in parents:
        place = place[key]
    place[last] = value
    return body


SHA = "a" * 40


@pytest.mark.parametrize(
    ("kind", "body", "field", "value"),
    [
        ("push", payloads.push("develop", SHA), "checkout_sha", "HEAD"),
        ("push", payloads.push("develop", SHA), "after", "develop"),
        ("push", payloads.push("develop", SHA), "before", "HEAD~1"),
        ("tag_push", payloads.tag_push("v1.2.3", SHA), "checkout_sha", "v1.2.3"),
        ("merge_request", payloads.merge_request(5, SHA), "object_attributes.last_commit.id", "x"),
        (
            "merge_request",
            payloads.merge_request(5, SHA, "update", oldrev=SHA),
            "object_attributes.oldrev",
            "HEAD^",
        ),
        ("pipeline", payloads.pipeline("main", SHA), "object_attributes.sha", "a" * 39),
        ("push", payloads.push("develop", SHA), "checkout_sha", "a" * 40 + "\nb"),
    ],
)
async def test_a_sha_that_is_not_a_commit_id_is_400_naming_the_field(
    receiver: Receiver, kind: str, body: dict[str, Any], field: str, value: str
) -> None:
    event_id = delivery()
    response = await receiver.deliver(kind, _with(body, field, value), event_id)
    assert response.status_code == 400
    header = payloads.EVENT_HEADER[kind]
    assert error_of(response) == (
        f"invalid {header} payload: {field}: {value!r} is not a 40-hex commit id"
    )
    assert await receiver.runs(event_id) == []
    assert recent_notices(1)[0]["reason"] == error_of(response), "kept for `status`"


async def test_a_push_with_checkout_sha_head_starts_nothing(receiver: Receiver) -> None:
    event_id = delivery()
    body = _with(payloads.push("develop", payloads.new_sha()), "checkout_sha", "HEAD")
    response = await receiver.deliver("push", body, event_id)
    assert response.status_code == 400
    assert error_of(response).endswith("checkout_sha: 'HEAD' is not a 40-hex commit id")
    assert await receiver.runs(event_id) == []


# --- 2. a merge request's changed files come from the GitLab API ---------------------------------


async def test_a_merge_request_without_the_gitlab_api_is_ignored_with_the_reason(
    receiver: Receiver, fake_gitlab: FakeGitLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOCIALNET_GITLAB_URL")
    sha, event_id = payloads.new_sha(), delivery()
    fake_gitlab.diffs[21] = ["infrastructure/terraform/stacks/staging/main.tf"]
    response = await receiver.deliver("merge_request", payloads.merge_request(21, sha), event_id)
    assert response.status_code == 202
    reason = (
        "the changed files of a merge request come from the GitLab API: "
        "set SOCIALNET_GITLAB_URL and SOCIALNET_GITLAB_TOKEN_FILE"
    )
    assert response.json() == {
        "status": "ignored",
        "delivery": event_id,
        "rules": ["terraform-plan"],
        "reason": reason,
        "sha": sha,
        "ref": "feature/dns-ttl",
    }
    assert await receiver.runs(event_id) == []
    assert receiver.launcher.queue.qsize() == 0, "nothing queued for a delivery that starts nothing"
    # `socialnet-ops status` shows it.
    (line,) = webhook_notices(1)
    assert line.endswith(f"Merge Request Hook ignored (202): {reason}")


async def test_a_merge_request_with_an_unusable_gitlab_token_says_why(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    loose = tmp_path / "gitlab-token"
    loose.write_text("glpat-x\n")
    loose.chmod(0o644)
    monkeypatch.setenv("SOCIALNET_GITLAB_TOKEN_FILE", str(loose))
    response = await receiver.deliver(
        "merge_request", payloads.merge_request(22, payloads.new_sha()), delivery()
    )
    assert (response.status_code, response.json()["status"]) == (202, "ignored")
    assert response.json()["reason"] == (
        "the changed files of a merge request come from the GitLab API: "
        f"SOCIALNET_GITLAB_TOKEN_FILE: {loose} is readable by others (mode 644); chmod 600 {loose}"
    )


# --- 3. the promotion gate answers in the reply ---------------------------------------------------


async def test_a_refused_tag_is_said_in_the_reply_and_kept_for_status(
    receiver: Receiver, fake_gitlab: FakeGitLab
) -> None:
    served, untested = payloads.new_sha(), payloads.new_sha()
    await set_staging_ledger(served)
    event_id = delivery()
    response = await receiver.deliver("tag_push", payloads.tag_push("v3.0.0", untested), event_id)
    assert response.status_code == 200
    assert response.json()["status"] == "refused"
    assert "planned" not in response.json()
    assert f"commit {untested[:8]} never served staging" in response.json()["reason"]
    (line,) = webhook_notices(1)
    assert f"Tag Push Hook refused (200): commit {untested[:8]} never served staging" in line
    await receiver.launcher.drain()
    (status,) = fake_gitlab.statuses(untested)
    assert status["state"] == "failed", "the commit still shows the refusal"


async def test_a_tag_whose_ledger_cannot_be_read_is_503_not_accepted(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(*_: object) -> None:
        raise OSError("connection refused")

    monkeypatch.setattr(receiver.launcher, "promotion_refusal", unreachable)
    event_id = delivery()
    response = await receiver.deliver(
        "tag_push", payloads.tag_push("v3.0.1", payloads.new_sha()), event_id
    )
    assert response.status_code == 503 and response.headers["retry-after"] == "30"
    assert "promotion gate" in error_of(response)
    assert await receiver.runs(event_id) == []


# --- 4. deep JSON -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b'{"a":' * 5000 + b"1" + b"}" * 5000, b'{"object_kind": "push", "x": ' + b"[" * 5000],
)
async def test_json_nested_thousands_deep_is_400(receiver: Receiver, body: bytes) -> None:
    response = await receiver.deliver("push", body, delivery())
    assert response.status_code == 400
    assert error_of(response) == "body is not valid JSON: nested too deeply"


async def test_a_body_that_does_not_arrive_in_time_is_408(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_receiver = receiver.app.state.receiver
    monkeypatch.setattr(
        app_receiver, "settings", dataclasses.replace(app_receiver.settings, body_seconds=0.3)
    )

    async def slow() -> AsyncIterator[bytes]:
        yield b'{"object_kind": '
        await asyncio.sleep(5)
        yield b'"push"}'

    response = await receiver.http.post(
        "/hooks/gitlab",
        content=slow(),
        headers={"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": WEBHOOK_TOKEN},
    )
    assert response.status_code == 408
    assert error_of(response) == "body not received within 0.3 s"


# --- 5. the alert inbox: token, size, one-line logs ------------------------------------------------


@pytest.fixture
def inbox(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / "alerts.jsonl"
    monkeypatch.setenv("SOCIALNET_ALERTS_FILE", str(path))
    return path


ALERT = {"subject": "Backup problem in local", "body": "socialnet.backup.failed: disk full"}


@pytest.mark.parametrize("token", [None, "", "wrong-token"])
async def test_an_alert_without_the_token_is_401_and_not_recorded(
    receiver: Receiver, inbox: Path, token: str | None
) -> None:
    headers = {} if token is None else {"X-Gitlab-Token": token}
    response = await receiver.http.post("/hooks/alerts", json=ALERT, headers=headers)
    assert response.status_code == 401
    assert error_of(response) == "missing or wrong X-Gitlab-Token"
    assert not inbox.exists()


async def test_an_alert_with_the_token_is_recorded(receiver: Receiver, inbox: Path) -> None:
    response = await receiver.http.post(
        "/hooks/alerts", json=ALERT, headers={"X-Gitlab-Token": WEBHOOK_TOKEN}
    )
    assert (response.status_code, response.json()) == (202, {"status": "recorded"})
    (line,) = inbox.read_text().splitlines()
    assert json.loads(line)["subject"] == ALERT["subject"]


async def test_an_oversize_alert_is_413_before_its_body_is_read(
    receiver: Receiver, inbox: Path
) -> None:
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:  # (bounded, so a receiver reading it all ends)
        nonlocal pulled
        for _ in range(16 * MAX_ALERT_BYTES // 8192):
            pulled += 1
            yield b" " * 8192

    token = {"X-Gitlab-Token": WEBHOOK_TOKEN}
    # Declared too large: refused before a byte of the body is read.
    response = await receiver.http.post(
        "/hooks/alerts",
        content=endless(),
        headers={**token, "Content-Length": str(MAX_ALERT_BYTES + 1)},
    )
    assert response.status_code == 413
    assert error_of(response) == f"body larger than {MAX_ALERT_BYTES} bytes"
    assert pulled == 0
    # Chunked (no length to trust): the read stops at the limit.
    response = await receiver.http.post("/hooks/alerts", content=endless(), headers=token)
    assert response.status_code == 413
    assert 0 < pulled <= 2 * (MAX_ALERT_BYTES // 8192 + 1)
    assert not inbox.exists()


async def test_an_alert_nested_too_deeply_is_400(receiver: Receiver, inbox: Path) -> None:
    response = await receiver.http.post(
        "/hooks/alerts",
        content=b"[" * 5000 + b"]" * 5000,
        headers={"X-Gitlab-Token": WEBHOOK_TOKEN},
    )
    assert response.status_code == 400
    assert error_of(response) == "body is not valid JSON: nested too deeply"


async def test_an_alert_subject_cannot_forge_log_lines(
    receiver: Receiver, inbox: Path, receiver_log: pytest.LogCaptureFixture
) -> None:
    forged = "disk full\n2026-01-01 00:00:00 INFO socialnet.webhooks deploy approved\r"
    await receiver.http.post(
        "/hooks/alerts",
        json={"subject": forged, "body": "line one\nline two"},
        headers={"X-Gitlab-Token": WEBHOOK_TOKEN},
    )
    (record,) = [r for r in receiver_log.records if r.getMessage().startswith("ALERT")]
    message = record.getMessage()
    assert "\n" not in message and "\r" not in message
    assert "disk full\\n2026-01-01" in message and "approved\\r" in message
    assert "line one\\nline two" in message
