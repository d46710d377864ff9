"""Feedback to GitLab: commit statuses and merge-request notes through the REST API (httpx).

Reporting is best effort: bounded retries with exponential backoff (3 attempts, under 10 s in
all), then a logged warning. A failure to report never fails a release, so every public function
here returns a bool instead of raising.

Configuration comes from the environment: `SOCIALNET_GITLAB_URL` (e.g. https://gitlab.example.com)
and `SOCIALNET_GITLAB_TOKEN_FILE` (a 0600 file holding a token with the `api` scope). Without a
URL, reporting is off. The token is sent as PRIVATE-TOKEN and never logged.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict
from urllib.parse import quote

import httpx
from prefect import task
from prefect.flows import FlowStateHook
from tenacity import (
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)
from tenacity import Retrying as _Retrying

from socialnet_ops.gitflow import context_from_tags

logger = logging.getLogger("socialnet.gitlab")

CommitState = Literal["pending", "running", "success", "failed", "canceled"]
ATTEMPTS = 3
REQUEST_TIMEOUT = 2.5  # seconds per attempt: 3 attempts + backoff stay under 10 s
TOTAL_DEADLINE = 9.5
DESCRIPTION_LIMIT = 255  # GitLab truncates commit status descriptions there
NOTE_LIMIT = 60_000


class GitLabConfigError(Exception):
    pass


class GitLabAPIError(Exception):
    """An answer GitLab gave that retrying will not change (4xx other than 429)."""


def read_secret_file(path: Path, what: str) -> str:
    """A token from a file only its owner can read (0600); the value never reaches a message."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise GitLabConfigError(f"{what}: {path} does not exist") from None
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise GitLabConfigError(
            f"{what}: {path} is readable by others (mode {stat.S_IMODE(info.st_mode):o}); "
            f"chmod 600 {path}"
        )
    value = path.read_text().strip()
    if not value:
        raise GitLabConfigError(f"{what}: {path} is empty")
    return value


@dataclass(frozen=True)
class GitLabSettings:
    url: str
    token: str

    def __repr__(self) -> str:  # keep the token out of logs and tracebacks
        return f"GitLabSettings(url={self.url!r}, token=<hidden>)"


def gitlab_settings() -> GitLabSettings | None:
    """From SOCIALNET_GITLAB_URL / SOCIALNET_GITLAB_TOKEN_FILE; None when reporting is off."""
    url = os.environ.get("SOCIALNET_GITLAB_URL", "").rstrip("/")
    if not url:
        return None
    token_file = os.environ.get("SOCIALNET_GITLAB_TOKEN_FILE")
    if not token_file:
        raise GitLabConfigError(
            "SOCIALNET_GITLAB_URL is set but SOCIALNET_GITLAB_TOKEN_FILE is not: "
            "point it at a 0600 file holding a GitLab token with the api scope"
        )
    return GitLabSettings(url, read_secret_file(Path(token_file), "SOCIALNET_GITLAB_TOKEN_FILE"))


def _retryable(error: BaseException) -> bool:
    if isinstance(error, httpx.TransportError):
        return True
    if isinstance(error, httpx.HTTPStatusError):
        code = error.response.status_code
        return code == 429 or code >= 500
    return False


class GitLabAPI:
    """The few GitLab REST calls the platform makes, with retries on 429, 5xx and network errors."""

    def __init__(
        self,
        settings: GitLabSettings,
        attempts: int = ATTEMPTS,
        transport: httpx.BaseTransport | None = None,
        backoff: float = 0.5,
    ) -> None:
        self.settings = settings
        self.attempts = attempts
        self.backoff = backoff
        self._client = httpx.Client(
            base_url=f"{settings.url}/api/v4",
            headers={"PRIVATE-TOKEN": settings.token, "User-Agent": "socialnet-ops"},
            timeout=REQUEST_TIMEOUT,
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> GitLabAPI:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        retrying = _Retrying(
            stop=stop_after_attempt(self.attempts) | stop_after_delay(TOTAL_DEADLINE),
            wait=wait_exponential(multiplier=self.backoff, max=4),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                response = self._client.request(method, path, **kwargs)
                if response.status_code == 429 or response.status_code >= 500:
                    response.raise_for_status()
                if response.status_code >= 400:
                    raise GitLabAPIError(
                        f"{method} {path}: {response.status_code} {response.text[:200]}"
                    )
                return response
        raise AssertionError("unreachable: tenacity reraises the last error")

    def set_commit_status(
        self,
        project_id: int | str,
        sha: str,
        state: CommitState,
        name: str,
        target_url: str | None = None,
        description: str = "",
        ref: str | None = None,
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "state": state,
            "name": name,
            "description": description[:DESCRIPTION_LIMIT],
        }
        if target_url:
            data["target_url"] = target_url
        if ref:
            data["ref"] = ref
        project = quote(str(project_id), safe="")
        response = self._request("POST", f"/projects/{project}/statuses/{sha}", json=data)
        return dict(response.json())

    def create_merge_request_note(
        self, project_id: int | str, merge_request_iid: int | str, body: str
    ) -> dict[str, Any]:
        project = quote(str(project_id), safe="")
        response = self._request(
            "POST",
            f"/projects/{project}/merge_requests/{merge_request_iid}/notes",
            json={"body": body[:NOTE_LIMIT]},
        )
        return dict(response.json())

    def merge_request_changed_paths(
        self, project_id: int | str, merge_request_iid: int | str
    ) -> list[str]:
        """Old and new paths of every changed file (paginated `diffs`, GitLab 15.7+)."""
        project = quote(str(project_id), safe="")
        paths: list[str] = []
        page: str | None = "1"
        while page:
            response = self._request(
                "GET",
                f"/projects/{project}/merge_requests/{merge_request_iid}/diffs",
                params={"page": page, "per_page": 100},
            )
            for diff in response.json():
                paths.extend(p for p in (diff.get("old_path"), diff.get("new_path")) if p)
            page = response.headers.get("x-next-page") or None
        return sorted(set(paths))


_clients: dict[GitLabSettings, GitLabAPI] = {}
_clients_lock = threading.Lock()


def shared_gitlab_api(settings: GitLabSettings) -> GitLabAPI:
    """One client per URL and token for the process: making one costs CPU (TLS context, CAs),
    and the receiver reports from many threads (httpx.Client is thread-safe)."""
    with _clients_lock:
        api = _clients.get(settings)
        if api is None:
            api = _clients[settings] = GitLabAPI(settings)
        return api


def _with_api(action: str, call: Callable[[GitLabAPI], Any]) -> bool:
    """Run `call` against the configured GitLab; log and return False on any failure."""
    try:
        settings = gitlab_settings()
    except GitLabConfigError as error:
        logger.warning("GitLab reporting is misconfigured, %s skipped: %s", action, error)
        return False
    if settings is None:
        logger.debug("SOCIALNET_GITLAB_URL is not set; %s skipped", action)
        return False
    try:
        call(shared_gitlab_api(settings))
        return True
    except RetryError as error:  # pragma: no cover - reraise=True makes this rare
        logger.warning("GitLab %s failed after retries: %s", action, error)
    except (httpx.HTTPError, GitLabAPIError, ValueError) as error:
        logger.warning("GitLab %s failed: %s", action, error)
    return False


def report_commit_status(
    project_id: int | str,
    sha: str,
    state: CommitState,
    target_url: str | None = None,
    description: str = "",
    name: str = "socialnet-ops",
    ref: str | None = None,
) -> bool:
    """Set the commit status `name` of `sha`; True when GitLab took it. Never raises."""
    return _with_api(
        f"commit status {state} for {sha[:8]}",
        lambda api: api.set_commit_status(
            project_id, sha, state, name, target_url, description, ref
        ),
    )


def post_merge_request_note(project_id: int | str, merge_request_iid: int | str, body: str) -> bool:
    """Add a note to a merge request; True when GitLab took it. Never raises."""
    return _with_api(
        f"note on !{merge_request_iid}",
        lambda api: api.create_merge_request_note(project_id, merge_request_iid, body),
    )


# Prefect tasks over the same functions, for flows that report a milestone themselves.
report_commit_status_task = task(name="gitlab-commit-status", retries=0)(report_commit_status)
post_merge_request_note_task = task(name="gitlab-merge-request-note", retries=0)(
    post_merge_request_note
)


# --- flow state hooks ----------------------------------------------------------------------------


def flow_run_url(flow_run_id: Any) -> str | None:
    from prefect.settings import PREFECT_UI_URL

    base = PREFECT_UI_URL.value()
    return f"{str(base).rstrip('/')}/runs/flow-run/{flow_run_id}" if base else None


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


def _hook(commit_state: CommitState, outcome: str) -> StateHook:
    def report(flow: Any, flow_run: Any, state: Any) -> None:
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
        if context.get("merge_request_iid") and commit_state != "running":
            post_merge_request_note(
                context["project_id"],
                context["merge_request_iid"],
                note_body(flow.name, flow_run.name, outcome, url, state),
            )

    report.__name__ = f"report_{commit_state}_to_gitlab"
    return report


def gitlab_status_hooks() -> GitLabHooks:
    """State hooks reporting a run started from GitLab back to its commit (and merge request).

    Keyword arguments for `@flow(...)`, merged with a flow's own hooks, e.g.::

        hooks = gitlab_status_hooks()
        @flow(on_running=hooks["on_running"], on_completion=hooks["on_completion"],
              on_failure=[announce_release_failure, *hooks["on_failure"]],
              on_crashed=hooks["on_crashed"], on_cancellation=hooks["on_cancellation"])

    Runs without GitLab context (no `gitlab` parameter, no `gitlab.*` tags) are left alone.
    """
    return {
        "on_running": [_hook("running", "is running")],
        "on_completion": [_hook("success", "succeeded")],
        "on_failure": [_hook("failed", "failed")],
        "on_crashed": [_hook("failed", "crashed")],
        "on_cancellation": [_hook("canceled", "was cancelled")],
    }


def attach_gitlab_status_hooks(flow: Any) -> Any:
    """Append the GitLab hooks to an existing flow object (keeps its own hooks); returns it."""
    for key, hooks in gitlab_status_hooks().items():
        getattr(flow, f"{key}_hooks").extend(hooks)  # e.g. flow.on_running_hooks
    return flow
