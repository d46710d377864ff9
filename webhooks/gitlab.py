"""GitLab webhook payloads (the documented shapes), validated and reduced to a `GitEvent`.

Only the fields the mapping needs are declared; GitLab adds fields over versions, so extra keys are
allowed. See https://docs.gitlab.com/user/project/integrations/webhook_events/.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from socialnet_ops.core.gitflow import GitEvent
from socialnet_ops.core.merge_requests import parse_command

# X-Gitlab-Event header -> object_kind of the body.
EVENT_HEADERS = {
    "Push Hook": "push",
    "Tag Push Hook": "tag_push",
    "Merge Request Hook": "merge_request",
    "Pipeline Hook": "pipeline",
    "Note Hook": "note",
}


class PayloadError(ValueError):
    """A body that is not a valid payload of its event; the message names the field."""


_COMMIT_ID = re.compile(r"[0-9a-fA-F]{40}")


def _commit_id(value: str) -> str:
    # The sha becomes a run's `ref`, its version and the commit status target: a name such as
    # HEAD or a branch would deploy whatever it points at when the run starts, not this event.
    if not _COMMIT_ID.fullmatch(value):
        shown = repr(value) if len(value) <= 60 else repr(value[:60]) + "..."
        raise ValueError(f"{shown} is not a 40-hex commit id")
    return value.lower()


CommitId = Annotated[str, AfterValidator(_commit_id)]


class Payload(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Project(Payload):
    id: int
    path_with_namespace: str = ""
    web_url: str | None = None


class User(Payload):
    username: str = "unknown"
    name: str | None = None


class PushEvent(Payload):
    object_kind: Literal["push", "tag_push"]
    ref: str = Field(pattern=r"^refs/(heads|tags)/.+")
    before: CommitId | None = None
    after: CommitId
    # The commit checked out at the ref; null when the ref was deleted. For an annotated tag
    # `after` is the tag object, `checkout_sha` the commit it points at.
    checkout_sha: CommitId | None = None
    user_username: str = "unknown"
    project_id: int
    project: Project


class LastCommit(Payload):
    id: CommitId


class MergeRequestAttributes(Payload):
    iid: int
    action: str | None = None
    source_branch: str
    target_branch: str
    oldrev: CommitId | None = None
    last_commit: LastCommit
    url: str | None = None


class MergeRequestEvent(Payload):
    object_kind: Literal["merge_request"]
    user: User
    project: Project
    object_attributes: MergeRequestAttributes


class PipelineAttributes(Payload):
    id: int
    ref: str
    tag: bool = False
    sha: CommitId
    status: str
    source: str | None = None
    url: str | None = None


class PipelineEvent(Payload):
    object_kind: Literal["pipeline"]
    user: User | None = None
    project: Project
    object_attributes: PipelineAttributes


class NoteAttributes(Payload):
    id: int
    note: str
    noteable_type: str
    system: bool = False
    # "create" or "update" (GitLab 16.11+); older versions send none and only for new notes.
    action: str | None = None


class NoteMergeRequest(Payload):
    iid: int
    source_branch: str
    target_branch: str
    last_commit: LastCommit
    state: str | None = None


class NoteEvent(Payload):
    """A comment (Note Hook); only comments on merge requests can be commands."""

    object_kind: Literal["note"]
    user: User
    project: Project
    object_attributes: NoteAttributes
    merge_request: NoteMergeRequest | None = None


def _note_event(body: dict[str, Any], delivery_id: str) -> GitEvent:
    note = NoteEvent.model_validate(body)
    attributes, request = note.object_attributes, note.merge_request
    if attributes.noteable_type != "MergeRequest" or request is None:
        return GitEvent(
            kind="note",
            delivery_id=delivery_id,
            project_id=note.project.id,
            project_path=note.project.path_with_namespace,
            sha="",
            author=note.user.username,
        )
    # An edited comment, or one GitLab writes itself, gives no command: editing an old
    # `socialnet-ops apply` must not apply again.
    command = None
    if not attributes.system and attributes.action in {None, "create"}:
        command = parse_command(attributes.note)
    return GitEvent(
        kind="note",
        delivery_id=delivery_id,
        project_id=note.project.id,
        project_path=note.project.path_with_namespace,
        sha=request.last_commit.id,
        author=note.user.username,
        branch=request.source_branch,
        merge_request_iid=request.iid,
        action=attributes.action,
        target_branch=request.target_branch,
        command=command.verb if command else None,
        command_environment=command.environment if command else None,
    )


def _problem(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "(body)"
    message = (
        "missing" if first["type"] == "missing" else first["msg"].removeprefix("Value error, ")
    )
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{location}: {message}{more}"


def parse_event(kind: str, body: dict[str, Any], delivery_id: str) -> GitEvent:
    """A validated `GitEvent` of `kind` (an object_kind), or PayloadError naming the field."""
    if body.get("object_kind") != kind:
        raise PayloadError(
            f"object_kind: {body.get('object_kind')!r} does not match the X-Gitlab-Event header "
            f"({kind!r} expected)"
        )
    try:
        if kind in {"push", "tag_push"}:
            push = PushEvent.model_validate(body)
            name = push.ref.split("/", 2)[2]
            is_tag = push.ref.startswith("refs/tags/")
            if is_tag != (kind == "tag_push"):
                raise PayloadError(f"ref: {push.ref!r} does not fit a {kind} event")
            return GitEvent(
                kind=push.object_kind,
                delivery_id=delivery_id,
                project_id=push.project.id,
                project_path=push.project.path_with_namespace,
                sha=push.checkout_sha or "0" * 40,
                author=push.user_username,
                branch=None if is_tag else name,
                tag=name if is_tag else None,
            )
        if kind == "merge_request":
            request = MergeRequestEvent.model_validate(body)
            attributes = request.object_attributes
            return GitEvent(
                kind="merge_request",
                delivery_id=delivery_id,
                project_id=request.project.id,
                project_path=request.project.path_with_namespace,
                sha=attributes.last_commit.id,
                author=request.user.username,
                branch=attributes.source_branch,
                merge_request_iid=attributes.iid,
                action=attributes.action,
                oldrev=attributes.oldrev,
                target_branch=attributes.target_branch,
            )
        if kind == "note":
            return _note_event(body, delivery_id)
        pipeline = PipelineEvent.model_validate(body)
        run = pipeline.object_attributes
        return GitEvent(
            kind="pipeline",
            delivery_id=delivery_id,
            project_id=pipeline.project.id,
            project_path=pipeline.project.path_with_namespace,
            sha=run.sha,
            author=pipeline.user.username if pipeline.user else "unknown",
            branch=None if run.tag else run.ref,
            tag=run.ref if run.tag else None,
            pipeline_id=run.id,
            pipeline_status=run.status,
        )
    except ValidationError as error:
        raise PayloadError(_problem(error)) from None
