"""Feedback to GitLab (socialnet_ops/adapters/gitlab.py, tasks/gitlab.py) against the fake GitLab API: retries, never failing a
release, and the flow state hooks that report a run started from GitLab."""

from __future__ import annotations

import logging
import time
from typing import Any

import prefect
import pytest
from prefect import flow

from socialnet_ops.adapters.gitlab import post_merge_request_note, report_commit_status
from tasks.gitlab import attach_gitlab_status_hooks, gitlab_status_hooks
from tests.integration.webhooks import payloads
from tests.integration.webhooks.fake_gitlab import TOKEN, FakeGitLab, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def gitlab(gitlab_env: None, fake_gitlab: FakeGitLab) -> FakeGitLab:
    fake_gitlab.reset()
    return fake_gitlab


def test_a_status_is_retried_with_backoff_until_gitlab_takes_it(gitlab: FakeGitLab) -> None:
    sha = payloads.new_sha()
    gitlab.fail_next(2, 502)
    assert report_commit_status(
        42, sha, "running", "http://ui/run", "deploy is running", "socialnet-ops/deploy-staging"
    )
    calls = [call for call in gitlab.calls if sha in call.path]
    assert len(calls) == 3
    assert all(call.token == TOKEN for call in calls)
    assert calls[2].at - calls[1].at > calls[1].at - calls[0].at, "the backoff grows"


def test_a_failure_to_report_gives_up_in_bounded_time_and_never_raises(
    gitlab: FakeGitLab, caplog: pytest.LogCaptureFixture
) -> None:
    sha = payloads.new_sha()
    gitlab.fail_next(10, 503)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="socialnet.gitlab"):
        assert report_commit_status(42, sha, "success") is False
        assert post_merge_request_note(42, 3, "plan") is False
    assert time.monotonic() - started < 20, "two reports, each under 10 s"
    assert len([call for call in gitlab.calls if sha in call.path]) == 3
    assert "failed" in caplog.text and TOKEN not in caplog.text


def test_a_refusal_by_gitlab_is_not_retried(gitlab: FakeGitLab) -> None:
    sha = payloads.new_sha()
    assert report_commit_status(42, sha, "exploded") is False  # type: ignore[arg-type]
    assert len(gitlab.calls) == 1


def test_an_unreachable_gitlab_is_a_warning(
    gitlab: FakeGitLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOCIALNET_GITLAB_URL", f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    assert report_commit_status(42, payloads.new_sha(), "pending") is False
    assert time.monotonic() - started < 10


def test_reporting_is_off_without_a_url_and_refuses_a_readable_token_file(
    gitlab: FakeGitLab,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("SOCIALNET_GITLAB_URL")
    assert report_commit_status(42, payloads.new_sha(), "pending") is False
    monkeypatch.setenv("SOCIALNET_GITLAB_URL", gitlab.url)
    loose = tmp_path / "token"
    loose.write_text(TOKEN)
    loose.chmod(0o644)
    monkeypatch.setenv("SOCIALNET_GITLAB_TOKEN_FILE", str(loose))
    with caplog.at_level(logging.WARNING, logger="socialnet.gitlab"):
        assert report_commit_status(42, payloads.new_sha(), "pending") is False
    assert "chmod 600" in caplog.text and TOKEN not in caplog.text
    assert gitlab.calls == []


# --- flow state hooks ------------------------------------------------------------------------------

hooks = gitlab_status_hooks()


@flow(name="webhook-test-release", **hooks)
def release(env: str, fail: bool = False, gitlab: dict[str, str] | None = None) -> dict[str, Any]:
    if fail:
        raise RuntimeError("smoke test failed on /api/health")
    return {
        "environment": env,
        "status": "changes",
        "plan": [{"address": "aws_route53_record.api", "action": "update", "attributes": "ttl"}],
    }


def context(sha: str, **extra: str) -> dict[str, str]:
    return {
        "project_id": "42",
        "sha": sha,
        "ref": "develop",
        "status_name": "socialnet-ops/deploy-staging",
        **extra,
    }


def test_hooks_report_running_then_success_with_a_link_to_the_run(
    prefect_server: None, gitlab: FakeGitLab
) -> None:
    sha = payloads.new_sha()
    release("staging", gitlab=context(sha))
    states = gitlab.statuses(sha)
    assert [s["state"] for s in states] == ["running", "success"]
    assert {s["name"] for s in states} == {"socialnet-ops/deploy-staging"}
    assert all("/runs/flow-run/" in s["target_url"] for s in states)
    assert gitlab.notes() == [], "no merge request: no note"


def test_a_failed_run_reports_failed_and_notes_the_merge_request(
    prefect_server: None, gitlab: FakeGitLab
) -> None:
    sha = payloads.new_sha()
    with pytest.raises(RuntimeError):
        release("staging", fail=True, gitlab=context(sha, merge_request_iid="8"))
    states = gitlab.statuses(sha)
    assert [s["state"] for s in states] == ["running", "failed"]
    assert "smoke test failed" in states[1]["description"]
    (note,) = gitlab.notes(8)
    assert "failed" in note


def test_a_plan_run_from_a_merge_request_posts_its_table(
    prefect_server: None, gitlab: FakeGitLab
) -> None:
    sha = payloads.new_sha()
    release("staging", gitlab=context(sha, merge_request_iid="9"))
    (note,) = gitlab.notes(9)
    assert "| address | action | attributes |" in note
    assert "| aws_route53_record.api | update | ttl |" in note


def test_tags_carry_the_context_for_flows_without_a_gitlab_parameter(
    prefect_server: None, gitlab: FakeGitLab
) -> None:
    @flow(name="webhook-test-plain")
    def plain(env: str) -> str:
        return env

    attach_gitlab_status_hooks(plain)
    sha = payloads.new_sha()
    with prefect.tags(
        "gitlab", "gitlab.project_id:42", f"gitlab.sha:{sha}", "gitlab.status_name:socialnet-ops/x"
    ):
        plain("staging")
    assert [s["state"] for s in gitlab.statuses(sha)] == ["running", "success"]
    plain("staging")  # no GitLab context: nothing reported
    assert len(gitlab.calls) == 2
