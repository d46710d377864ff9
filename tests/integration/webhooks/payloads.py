"""GitLab webhook bodies in the documented shapes (docs.gitlab.com, "Webhook events").

Trimmed to a realistic subset of fields, including ones the receiver ignores, so validation is
exercised against what GitLab actually sends.
"""

from __future__ import annotations

import secrets
from typing import Any

PROJECT_ID = 42
PROJECT_PATH = "socialnet/socialnet"
NULL_SHA = "0" * 40


def new_sha() -> str:
    return secrets.token_hex(20)


def _project() -> dict[str, Any]:
    return {
        "id": PROJECT_ID,
        "name": "socialnet",
        "description": "",
        "web_url": f"https://gitlab.example.com/{PROJECT_PATH}",
        "git_ssh_url": f"git@gitlab.example.com:{PROJECT_PATH}.git",
        "git_http_url": f"https://gitlab.example.com/{PROJECT_PATH}.git",
        "namespace": "socialnet",
        "visibility_level": 0,
        "path_with_namespace": PROJECT_PATH,
        "default_branch": "main",
    }


def _commit(sha: str, message: str = "Update timeline query") -> dict[str, Any]:
    return {
        "id": sha,
        "message": f"{message}\n",
        "title": message,
        "timestamp": "2025-01-15T10:02:03+00:00",
        "url": f"https://gitlab.example.com/{PROJECT_PATH}/-/commit/{sha}",
        "author": {"name": "Ada Lovelace", "email": "ada@example.com"},
        "added": [],
        "modified": ["app/api/routes/timeline.py"],
        "removed": [],
    }


def push(branch: str, sha: str, before: str | None = None, user: str = "ada") -> dict[str, Any]:
    deleted = sha == NULL_SHA
    return {
        "object_kind": "push",
        "event_name": "push",
        "before": before or new_sha(),
        "after": sha,
        "ref": f"refs/heads/{branch}",
        "ref_protected": branch in {"main", "develop"},
        "checkout_sha": None if deleted else sha,
        "message": None,
        "user_id": 4,
        "user_name": "Ada Lovelace",
        "user_username": user,
        "user_email": "",
        "user_avatar": "https://gitlab.example.com/uploads/-/system/user/avatar/4/avatar.png",
        "project_id": PROJECT_ID,
        "project": _project(),
        "commits": [] if deleted else [_commit(sha)],
        "total_commits_count": 0 if deleted else 1,
        "push_options": {},
        "repository": {
            "name": "socialnet",
            "url": f"git@gitlab.example.com:{PROJECT_PATH}.git",
            "homepage": f"https://gitlab.example.com/{PROJECT_PATH}",
        },
    }


def tag_push(tag: str, sha: str, annotated: bool = True, user: str = "ada") -> dict[str, Any]:
    """For an annotated tag `after` is the tag object; `checkout_sha` is the commit."""
    return {
        "object_kind": "tag_push",
        "event_name": "tag_push",
        "before": NULL_SHA,
        "after": new_sha() if annotated else sha,
        "ref": f"refs/tags/{tag}",
        "ref_protected": True,
        "checkout_sha": sha,
        "message": f"Release {tag}" if annotated else None,
        "user_id": 4,
        "user_name": "Ada Lovelace",
        "user_username": user,
        "user_avatar": "https://gitlab.example.com/uploads/-/system/user/avatar/4/avatar.png",
        "project_id": PROJECT_ID,
        "project": _project(),
        "commits": [],
        "total_commits_count": 0,
        "push_options": {},
        "repository": {"name": "socialnet"},
    }


def merge_request(
    iid: int,
    sha: str,
    action: str = "open",
    oldrev: str | None = None,
    source: str = "feature/dns-ttl",
    target: str = "develop",
    user: str = "grace",
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "id": 90000 + iid,
        "iid": iid,
        "target_branch": target,
        "source_branch": source,
        "source_project_id": PROJECT_ID,
        "target_project_id": PROJECT_ID,
        "author_id": 7,
        "title": "Lower the DNS TTL",
        "description": "",
        "state": "opened",
        "merge_status": "unchecked",
        "detailed_merge_status": "checking",
        "draft": False,
        "url": f"https://gitlab.example.com/{PROJECT_PATH}/-/merge_requests/{iid}",
        "last_commit": _commit(sha, "Lower the DNS TTL"),
        "action": action,
    }
    if oldrev:
        attributes["oldrev"] = oldrev
    return {
        "object_kind": "merge_request",
        "event_type": "merge_request",
        "user": {"id": 7, "name": "Grace Hopper", "username": user, "avatar_url": ""},
        "project": _project(),
        "object_attributes": attributes,
        "labels": [],
        "changes": {},
        "repository": {"name": "socialnet"},
    }


def pipeline(ref: str, sha: str, status: str = "success", tag: bool = False) -> dict[str, Any]:
    return {
        "object_kind": "pipeline",
        "object_attributes": {
            "id": 31000,
            "iid": 312,
            "name": None,
            "ref": ref,
            "tag": tag,
            "sha": sha,
            "before_sha": new_sha(),
            "source": "push",
            "status": status,
            "detailed_status": "passed" if status == "success" else status,
            "stages": ["lint", "test", "build", "deploy"],
            "created_at": "2025-01-15 10:02:03 UTC",
            "finished_at": "2025-01-15 10:12:40 UTC",
            "duration": 637,
            "queued_duration": 3,
            "variables": [],
            "url": f"https://gitlab.example.com/{PROJECT_PATH}/-/pipelines/31000",
        },
        "merge_request": None,
        "user": {"id": 4, "name": "Ada Lovelace", "username": "ada", "avatar_url": "", "email": ""},
        "project": _project(),
        "commit": _commit(sha),
        "source_pipeline": None,
        "builds": [],
    }


def note(
    iid: int,
    sha: str,
    text: str,
    source: str = "feature/dns-ttl",
    target: str = "develop",
    user: str = "grace",
    action: str | None = "create",
    noteable_type: str = "MergeRequest",
) -> dict[str, Any]:
    """A comment on merge request !iid (Note Hook); `merge_request` only when on one."""
    attributes: dict[str, Any] = {
        "id": 1240000 + iid,
        "note": text,
        "noteable_type": noteable_type,
        "author_id": 7,
        "created_at": "2025-01-15 10:12:40 UTC",
        "updated_at": "2025-01-15 10:12:40 UTC",
        "project_id": PROJECT_ID,
        "attachment": None,
        "line_code": None,
        "commit_id": "",
        "noteable_id": 90000 + iid,
        "system": False,
        "st_diff": None,
        "url": f"https://gitlab.example.com/{PROJECT_PATH}/-/merge_requests/{iid}#note_1",
    }
    if action is not None:
        attributes["action"] = action
    body: dict[str, Any] = {
        "object_kind": "note",
        "event_type": "note",
        "user": {"id": 7, "name": "Grace Hopper", "username": user, "avatar_url": ""},
        "project_id": PROJECT_ID,
        "project": _project(),
        "object_attributes": attributes,
        "repository": {"name": "socialnet"},
    }
    if noteable_type == "MergeRequest":
        body["merge_request"] = {
            "id": 90000 + iid,
            "iid": iid,
            "target_branch": target,
            "source_branch": source,
            "source_project_id": PROJECT_ID,
            "target_project_id": PROJECT_ID,
            "title": "Lower the DNS TTL",
            "state": "opened",
            "merge_status": "can_be_merged",
            "detailed_merge_status": "mergeable",
            "last_commit": _commit(sha, "Lower the DNS TTL"),
        }
    return body


EVENT_HEADER = {
    "push": "Push Hook",
    "tag_push": "Tag Push Hook",
    "merge_request": "Merge Request Hook",
    "pipeline": "Pipeline Hook",
    "note": "Note Hook",
}
