"""Feedback to GitLab through its REST API (python-gitlab): commit statuses, merge-request notes
(new ones, and the plan note of a stack edited in place), the changed files of a merge request,
and what GitLab says of a merge request (head, state, approvals, mergeability).

Reporting is best effort: bounded retries with exponential backoff (3 attempts, under 10 s in
all), then a logged warning. A failure to report never fails a release, so every public function
here returns a bool instead of raising.

Configuration comes from the environment: `SOCIALNET_GITLAB_URL` (e.g. https://gitlab.example.com)
and `SOCIALNET_GITLAB_TOKEN_FILE` (a 0600 file holding a token with the `api` scope). Without a
URL, reporting is off. The token is sent as PRIVATE-TOKEN and never logged.

No Prefect here: `tasks/gitlab.py` wraps it in tasks and flow state hooks; the webhook receiver
calls it directly.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import gitlab
import requests
from gitlab.exceptions import GitlabError
from tenacity import (
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)
from tenacity import Retrying as _Retrying

from socialnet_ops.core.merge_requests import MergeRequestState

logger = logging.getLogger("socialnet.gitlab")
T = TypeVar("T")

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
    """Network trouble, 429 and 5xx are worth another try; any other answer is final."""
    if isinstance(error, requests.ConnectionError | requests.Timeout):
        return True
    if isinstance(error, GitlabError):
        code = error.response_code or 0
        return code == 429 or code >= 500
    return False


class GitLabAPI:
    """The few GitLab calls the platform makes (python-gitlab), with retries on 429, 5xx and
    network errors bounded in count and time (tenacity: python-gitlab's own retries are per call
    and unbounded in time, so they are off)."""

    def __init__(
        self, settings: GitLabSettings, attempts: int = ATTEMPTS, backoff: float = 0.5
    ) -> None:
        self.settings = settings
        self.attempts = attempts
        self.backoff = backoff
        # A python-gitlab client holds a requests.Session, which is not thread-safe: one per
        # thread (the receiver reports from several).
        self._local = threading.local()

    @property
    def _gitlab(self) -> gitlab.Gitlab:
        client: gitlab.Gitlab | None = getattr(self._local, "client", None)
        if client is None:
            client = gitlab.Gitlab(
                self.settings.url,
                private_token=self.settings.token,
                timeout=REQUEST_TIMEOUT,
                user_agent="socialnet-ops",
                retry_transient_errors=False,
            )
            self._local.client = client
        return client

    def close(self) -> None:
        client: gitlab.Gitlab | None = getattr(self._local, "client", None)
        if client is not None:
            client.session.close()

    def __enter__(self) -> GitLabAPI:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, what: str, call: Callable[[gitlab.Gitlab], T]) -> T:
        retrying = _Retrying(
            stop=stop_after_attempt(self.attempts) | stop_after_delay(TOTAL_DEADLINE),
            wait=wait_exponential(multiplier=self.backoff, max=4),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                try:
                    return call(self._gitlab)
                except GitlabError as error:
                    if _retryable(error):
                        raise
                    raise GitLabAPIError(
                        f"{what}: {error.response_code} {str(error.error_message)[:200]}"
                    ) from None
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

        def create(api: gitlab.Gitlab) -> dict[str, Any]:
            commit = api.projects.get(project_id, lazy=True).commits.get(sha, lazy=True)
            return dict(commit.statuses.create(data, max_retries=0).asdict())

        return self._call(f"status of {sha[:8]}", create)

    def create_merge_request_note(
        self, project_id: int | str, merge_request_iid: int | str, body: str
    ) -> dict[str, Any]:
        def create(api: gitlab.Gitlab) -> dict[str, Any]:
            merge_request = api.projects.get(project_id, lazy=True).mergerequests.get(
                merge_request_iid, lazy=True
            )
            note = merge_request.notes.create({"body": body[:NOTE_LIMIT]}, max_retries=0)
            return dict(note.asdict())

        return self._call(f"note on !{merge_request_iid}", create)

    def _user_id(self, api: gitlab.Gitlab) -> int | None:
        """The token's own user (GET /user), to find the notes it wrote; cached per client."""
        if getattr(self._local, "user_id", None) is None:
            api.auth()
            self._local.user_id = api.user.id if api.user else None
        return getattr(self._local, "user_id", None)

    def find_merge_request_note(
        self, project_id: int | str, merge_request_iid: int | str, marker: str
    ) -> tuple[int, str] | None:
        """(id, body) of the first note this token wrote on the merge request holding `marker`."""

        def find(api: gitlab.Gitlab) -> tuple[int, str] | None:
            me = self._user_id(api)
            merge_request = api.projects.get(project_id, lazy=True).mergerequests.get(
                merge_request_iid, lazy=True
            )
            notes = merge_request.notes.list(
                iterator=True, sort="asc", order_by="created_at", per_page=100, max_retries=0
            )
            for note in notes:
                author = (note.attributes.get("author") or {}).get("id")
                body = note.attributes.get("body") or ""
                if note.attributes.get("system") or marker not in body:
                    continue
                if me is None or author == me:
                    return int(note.get_id()), str(body)  # type: ignore[arg-type]
            return None

        return self._call(f"notes of !{merge_request_iid}", find)

    def update_merge_request_note(
        self, project_id: int | str, merge_request_iid: int | str, note_id: int, body: str
    ) -> dict[str, Any]:
        def update(api: gitlab.Gitlab) -> dict[str, Any]:
            merge_request = api.projects.get(project_id, lazy=True).mergerequests.get(
                merge_request_iid, lazy=True
            )
            return dict(
                merge_request.notes.update(note_id, {"body": body[:NOTE_LIMIT]}, max_retries=0)
            )

        return self._call(f"note {note_id} on !{merge_request_iid}", update)

    def upsert_merge_request_note(
        self,
        project_id: int | str,
        merge_request_iid: int | str,
        marker: str,
        render: Callable[[str | None], str],
    ) -> int:
        """Edit the note holding `marker` (its body becomes `render(old body)`), or add one."""
        found = self.find_merge_request_note(project_id, merge_request_iid, marker)
        if found is None:
            created = self.create_merge_request_note(project_id, merge_request_iid, render(None))
            return int(created["id"])
        note_id, body = found
        self.update_merge_request_note(project_id, merge_request_iid, note_id, render(body))
        return note_id

    def merge_request_state(
        self, project_id: int | str, merge_request_iid: int | str
    ) -> MergeRequestState:
        """Head, state and mergeability (GET merge_requests/:iid), approval (.../approvals)."""

        def read(api: gitlab.Gitlab) -> MergeRequestState:
            project = api.projects.get(project_id, lazy=True)
            merge_request = project.mergerequests.get(merge_request_iid, max_retries=0)
            approvals = merge_request.approvals.get(max_retries=0)
            attributes = merge_request.attributes
            return MergeRequestState(
                iid=int(attributes["iid"]),
                sha=str(attributes.get("sha") or ""),
                state=str(attributes.get("state") or "unknown"),
                detailed_merge_status=str(attributes.get("detailed_merge_status") or ""),
                approved=bool(approvals.attributes.get("approved")),
                target_branch=str(attributes.get("target_branch") or "main"),
            )

        return self._call(f"!{merge_request_iid}", read)

    def merge_request_changed_paths(
        self, project_id: int | str, merge_request_iid: int | str
    ) -> list[str]:
        """Old and new paths of every changed file (paginated `diffs`, GitLab 15.7+; python-gitlab
        has no manager for it, so its generic paginated list)."""
        project = quote(str(project_id), safe="")
        path = f"/projects/{project}/merge_requests/{merge_request_iid}/diffs"

        def read(api: gitlab.Gitlab) -> list[str]:
            paths: list[str] = []
            for diff in api.http_list(path, iterator=True, per_page=100, max_retries=0):
                paths.extend(p for p in (diff.get("old_path"), diff.get("new_path")) if p)
            return sorted(set(paths))

        return self._call(f"changes of !{merge_request_iid}", read)


_clients: dict[GitLabSettings, GitLabAPI] = {}
_clients_lock = threading.Lock()


def shared_gitlab_api(settings: GitLabSettings) -> GitLabAPI:
    """One client per URL and token for the process: making one costs CPU (TLS context, CAs),
    and the receiver reports from many threads (each gets its own session)."""
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
    except (requests.RequestException, GitlabError, GitLabAPIError, ValueError) as error:
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


def upsert_merge_request_note(
    project_id: int | str,
    merge_request_iid: int | str,
    marker: str,
    render: Callable[[str | None], str],
) -> bool:
    """Edit the note holding `marker` or add it; True when GitLab took it. Never raises."""
    return _with_api(
        f"note {marker} on !{merge_request_iid}",
        lambda api: api.upsert_merge_request_note(project_id, merge_request_iid, marker, render),
    )


def read_merge_request_state(
    project_id: int | str, merge_request_iid: int | str
) -> MergeRequestState:
    """What GitLab says of the merge request now; a one-line error when it cannot be read (a
    decision such as apply is never taken on a guess)."""
    try:
        settings = gitlab_settings()
    except GitLabConfigError as error:
        raise GitLabConfigError(f"merge request commands need the GitLab API: {error}") from None
    if settings is None:
        raise GitLabConfigError(
            "merge request commands need the GitLab API: set SOCIALNET_GITLAB_URL and "
            "SOCIALNET_GITLAB_TOKEN_FILE"
        )
    try:
        return shared_gitlab_api(settings).merge_request_state(project_id, merge_request_iid)
    except (requests.RequestException, GitlabError, GitLabAPIError, KeyError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise GitLabAPIError(
            f"{settings.url}: cannot read merge request !{merge_request_iid} of project "
            f"{project_id}: {first[:200]}"
        ) from None


def flow_run_url(ui_url: str | None, flow_run_id: Any) -> str | None:
    """The Prefect UI's page of a flow run (None without a UI address)."""
    return f"{str(ui_url).rstrip('/')}/runs/flow-run/{flow_run_id}" if ui_url else None
