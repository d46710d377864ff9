"""The gitflow mapping: which GitLab event starts which deployment, with which parameters.

Pure: no Prefect, no network. The receiver (`webhooks/`) turns a GitLab payload into a `GitEvent`,
asks `matching_rules` which rules apply and `launches` what to start; it reads the changed files of
a merge request and the promotion source's ledger itself and hands them in.

The mapping is `deployments/gitflow.yaml`; errors name the file and the key, like the catalog's.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from socialnet_ops.core.ledger import Ledger
from socialnet_ops.core.paths import repo_root

EventKind = Literal["push", "tag_push", "merge_request", "pipeline", "note"]
NULL_SHA = "0" * 40
# What a version may hold (socialnet_ops.adapters.builds.VERSION): branch names are squeezed into it.
_VERSION_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
SHORT_SHA = 8  # GitLab's short_id length

# Placeholders a rule's parameters and deployment name may use.
PLACEHOLDERS = frozenset(
    {
        "sha",
        "short_sha",
        "ref",
        "branch",
        "branch_slug",
        "tag",
        "environment",
        "project_id",
        "merge_request_iid",
        "author",
    }
)


class GitflowError(Exception):
    """A mapping that cannot be used; the message names file, key and reason."""


def gitflow_file() -> Path:
    return repo_root() / "deployments" / "gitflow.yaml"


# --- the event, as the mapping sees it -----------------------------------------------------------


class GitEvent(BaseModel):
    """One GitLab delivery reduced to what the mapping needs (see webhooks/gitlab.py)."""

    model_config = ConfigDict(frozen=True)

    kind: EventKind
    delivery_id: str
    project_id: int
    project_path: str = ""
    sha: str  # the exact commit the event is about
    author: str = "unknown"
    branch: str | None = None  # push, pipeline (non-tag), merge request source branch
    tag: str | None = None  # tag push, pipeline on a tag
    # merge requests
    merge_request_iid: int | None = None
    action: str | None = None
    oldrev: str | None = None
    target_branch: str | None = None
    # pipelines
    pipeline_id: int | None = None
    pipeline_status: str | None = None
    # notes on a merge request: the command they give (core/merge_requests.py parse_command)
    command: str | None = None
    command_environment: str | None = None  # None: every stack the merge request touches

    @property
    def ref(self) -> str:
        return self.tag or self.branch or ""


# --- the mapping ---------------------------------------------------------------------------------


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as error:
        raise ValueError(f"{value!r} is not a regular expression: {error}") from None
    return value


Pattern = Annotated[str, AfterValidator(_regex)]


def _placeholders(text: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}


def _template(value: str) -> str:
    try:
        unknown = _placeholders(value) - PLACEHOLDERS
    except ValueError as error:
        raise ValueError(f"{value!r}: {error}") from None
    if unknown:
        raise ValueError(
            f"{value!r} uses {', '.join(sorted(unknown))}; known: {', '.join(sorted(PLACEHOLDERS))}"
        )
    return value


Template = Annotated[str, AfterValidator(_template)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(Model):
    """Conditions on the event; regular expressions match the whole name."""

    branch: Pattern | None = None
    tag: Pattern | None = None
    target_branch: Pattern | None = None
    actions: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)  # merge requests: changed path prefixes
    status: str | None = None  # pipelines: success, failed, ...
    commands: list[str] = Field(default_factory=list)  # notes: `socialnet-ops <command>`


class Rule(Model):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")]
    description: str = ""
    event: EventKind
    match: Match
    # "<flow name>/<deployment name>"; `{environment}` when the rule fans out to environments.
    deployment: Annotated[Template, Field(pattern=r"^[^/]+/[^/]+$")]
    parameters: dict[str, Any] = Field(default_factory=dict)
    # Start only a build (commit) that already served the promotion source of the target
    # environment (its `promotion.source` in the catalog), e.g. production <- staging.
    requires_promotion: bool = False
    # Merge requests: the environments whose stack a change may touch; a change under one of
    # `shared_paths` touches all of them (modules are shared by every stack).
    environments: list[str] = Field(default_factory=list)
    shared_paths: list[str] = Field(default_factory=list)
    post_note: bool = False

    @model_validator(mode="after")
    def _fits_its_event(self) -> Rule:
        allowed = {
            "push": {"branch"},
            "tag_push": {"tag"},
            "merge_request": {"target_branch", "actions", "paths"},
            "pipeline": {"branch", "tag", "status"},
            "note": {"target_branch", "commands", "paths"},
        }[self.event]
        used = {key for key in Match.model_fields if getattr(self.match, key) not in (None, [])}
        if used - allowed:
            raise ValueError(
                f"match.{sorted(used - allowed)[0]} does not apply to {self.event} events "
                f"(allowed: {', '.join(sorted(allowed))})"
            )
        if self.event == "push" and self.match.branch is None:
            raise ValueError("match.branch is required for push events")
        if self.event == "tag_push" and self.match.tag is None:
            raise ValueError("match.tag is required for tag_push events")
        if self.event == "pipeline" and (self.match.branch is None) == (self.match.tag is None):
            raise ValueError("match: a pipeline rule needs exactly one of branch or tag")
        if self.event == "note" and not self.match.commands:
            raise ValueError("match.commands is required for note events (e.g. [apply])")
        fans_out = "{environment}" in self.deployment
        if fans_out != bool(self.environments):
            raise ValueError(
                "deployment: `{environment}` and `environments` go together "
                "(one run per affected environment)"
            )
        if self.environments and self.event not in {"merge_request", "note"}:
            raise ValueError(
                "environments: only merge request and note rules fan out to environments"
            )
        if "env" not in self.parameters:
            raise ValueError("parameters.env is required: every flow runs against an environment")
        for key, value in self.parameters.items():
            if isinstance(value, str):
                try:
                    _template(value)
                except ValueError as error:
                    raise ValueError(f"parameters.{key}: {error}") from None
        return self

    @property
    def needs_changed_paths(self) -> bool:
        return self.event in {"merge_request", "note"} and bool(self.match.paths)


class GitflowMapping(Model):
    # Only these projects (path_with_namespace) may start anything; empty: any project.
    projects: list[str] = Field(default_factory=list)
    # Commit statuses are named "<status_prefix>/<deployment name>".
    status_prefix: str = "socialnet-ops"
    rules: list[Rule]

    @model_validator(mode="after")
    def _unique_names(self) -> GitflowMapping:
        names = [rule.name for rule in self.rules]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"rules: the name {duplicates[0]!r} is used twice")
        return self


def _location(loc: Sequence[int | str]) -> str:
    parts: list[str] = []
    for item in loc:
        parts.append(f"[{item}]" if isinstance(item, int) else (f".{item}" if parts else item))
    return "".join(parts) or "(top level)"


def parse_mapping(document: Any, source: str) -> GitflowMapping:
    if not isinstance(document, dict):
        raise GitflowError(f"{source}: the file must hold a mapping of keys")
    try:
        return GitflowMapping.model_validate(document)
    except ValidationError as error:
        lines = []
        for item in error.errors():
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                message = "unknown key"
            elif item["type"] == "missing":
                message = "missing field"
            lines.append(f"{source}: {_location(item['loc'])}: {message}")
        raise GitflowError("\n".join(lines)) from None


def load_mapping(path: Path | None = None) -> GitflowMapping:
    path = path or gitflow_file()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise GitflowError(f"{path}: file not found") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise GitflowError(f"{path}: not valid YAML: {error}") from None
    return parse_mapping(document, str(path))


def check_against_catalog(
    mapping: GitflowMapping, environments: Iterable[str], promotion_sources: Mapping[str, str]
) -> None:
    """Names in the mapping must exist in the environment catalog (checked at receiver start)."""
    known = set(environments)
    for index, rule in enumerate(mapping.rules):
        place = f"rules[{index}] ({rule.name})"
        targets = list(rule.environments)
        env = rule.parameters.get("env")
        if isinstance(env, str) and not _placeholders(env):
            targets.append(env)
        for name in targets:
            if name not in known:
                raise GitflowError(f"{place}: environment {name!r} is not in the catalog")
        if rule.requires_promotion:
            if not isinstance(env, str) or _placeholders(env):
                raise GitflowError(f"{place}: requires_promotion needs a fixed parameters.env")
            if env not in promotion_sources:
                raise GitflowError(
                    f"{place}: requires_promotion, but environment {env!r} has no promotion.source"
                )


# --- deciding ------------------------------------------------------------------------------------


def _full(pattern: str | None, value: str | None) -> bool:
    return pattern is None or (value is not None and re.fullmatch(pattern, value) is not None)


def rule_applies(rule: Rule, event: GitEvent) -> bool:
    if rule.event != event.kind:
        return False
    match = rule.match
    if event.kind == "merge_request":
        if match.actions and event.action not in match.actions:
            return False
        # "update" is also sent for title, label or assignee edits: only new commits count.
        if event.action == "update" and not event.oldrev:
            return False
        return _full(match.target_branch, event.target_branch)
    if event.kind == "note":
        return event.command in match.commands and _full(match.target_branch, event.target_branch)
    if event.kind == "pipeline":
        if match.status is not None and event.pipeline_status != match.status:
            return False
        if match.tag is not None:
            return _full(match.tag, event.tag)
        return event.tag is None and _full(match.branch, event.branch)
    if event.kind == "tag_push":
        return _full(match.tag, event.tag)
    return _full(match.branch, event.branch)


def matching_rules(mapping: GitflowMapping, event: GitEvent) -> tuple[list[Rule], str]:
    """The rules that apply, or none with the reason the event is ignored."""
    if mapping.projects and event.project_path not in mapping.projects:
        return [], f"project {event.project_path!r} is not one of {mapping.projects}"
    if event.kind == "note" and (event.merge_request_iid is None or event.command is None):
        where = f"!{event.merge_request_iid}" if event.merge_request_iid else "no merge request"
        return [], f"the note on {where} is not a socialnet-ops command"
    if event.sha == NULL_SHA or not event.sha:
        return [], f"{event.ref or 'the ref'} was deleted"
    rules = [rule for rule in mapping.rules if rule_applies(rule, event)]
    if rules:
        return rules, ""
    what = {
        "push": f"branch {event.branch!r}",
        "tag_push": f"tag {event.tag!r}",
        "merge_request": f"merge request !{event.merge_request_iid} ({event.action})",
        "pipeline": f"pipeline {event.pipeline_id} ({event.pipeline_status}) on {event.ref!r}",
        "note": f"the command {event.command!r} on !{event.merge_request_iid}",
    }[event.kind]
    return [], f"no rule of the gitflow mapping for {what}"


def branch_slug(branch: str) -> str:
    """`feature/Login` -> `feature-Login`: a branch name that fits a release version."""
    return _VERSION_UNSAFE.sub("-", branch).strip("-.") or "branch"


def push_version(branch: str, sha: str) -> str:
    """The version of a branch build: `<branch>-<short sha>` (at most 64 characters)."""
    suffix = f"-{sha[:SHORT_SHA]}"
    return branch_slug(branch)[: 64 - len(suffix)] + suffix


def affected_environments(
    rule: Rule, changed_paths: Iterable[str], stacks: Mapping[str, str]
) -> list[str]:
    """Environments of `rule` whose Terraform stack (`stacks`: env -> folder) a change touches."""
    paths = [path for path in changed_paths if any(path.startswith(p) for p in rule.match.paths)]
    if any(path.startswith(prefix) for path in paths for prefix in rule.shared_paths):
        return list(rule.environments)
    touched = []
    for environment in rule.environments:
        folder = stacks.get(environment, "").rstrip("/") + "/"
        if folder != "/" and any(path.startswith(folder) for path in paths):
            touched.append(environment)
    return touched


def delivery_key(idempotency_key: str | None, event_uuid: str | None, body: bytes) -> str:
    """What identifies a delivery across GitLab's retries.

    `Idempotency-Key` (GitLab 17.4+) is kept across retries by design; `X-Gitlab-Event-UUID`
    identifies the event; without either, the digest of the body stands in.
    """
    for value in (idempotency_key, event_uuid):
        if value and value.strip():
            return value.strip()[:128]
    return "sha256-" + hashlib.sha256(body).hexdigest()


def run_idempotency_key(event: GitEvent, deployment: str) -> str:
    """One run per (delivery, deployment); Prefect dedupes on it per flow."""
    return f"gitlab:{event.kind}:{event.delivery_id}:{deployment}"


class Launch(Model):
    """One deployment run to start for an event."""

    rule: str
    deployment: str  # "<flow>/<deployment>"
    parameters: dict[str, Any]
    gitlab: dict[str, str]  # the `gitlab` parameter, for flows that accept it
    tags: list[str]
    idempotency_key: str
    status_name: str
    requires_promotion: bool
    post_note: bool

    @property
    def environment(self) -> str:
        return str(self.parameters["env"])


def _values(event: GitEvent, environment: str | None) -> dict[str, str]:
    return {
        "sha": event.sha,
        "short_sha": event.sha[:SHORT_SHA],
        "ref": event.ref,
        "branch": event.branch or "",
        "branch_slug": branch_slug(event.branch or event.tag or ""),
        "tag": event.tag or "",
        "environment": environment or "",
        "project_id": str(event.project_id),
        "merge_request_iid": str(event.merge_request_iid or ""),
        "author": event.author,
    }


def _numbers(event: GitEvent) -> dict[str, int]:
    """Placeholders that are numbers: a parameter that is exactly one of them stays a number,
    which a deployment's parameter schema (an integer) accepts and a string would not be."""
    numbers = {"project_id": event.project_id}
    if event.merge_request_iid is not None:
        numbers["merge_request_iid"] = event.merge_request_iid
    return numbers


_WHOLE_PLACEHOLDER = re.compile(r"^\{([a-z_]+)\}$")


def _render(value: Any, values: Mapping[str, str], numbers: Mapping[str, int]) -> Any:
    if isinstance(value, str):
        whole = _WHOLE_PLACEHOLDER.match(value)
        if whole and whole.group(1) in numbers:
            return numbers[whole.group(1)]
        return value.format_map(values)
    if isinstance(value, list):
        return [_render(item, values, numbers) for item in value]
    if isinstance(value, dict):
        return {key: _render(item, values, numbers) for key, item in value.items()}
    return value


def gitlab_context(event: GitEvent, status_name: str) -> dict[str, str]:
    """What a run started from GitLab carries: enough to report back and to trace it."""
    context = {
        "project_id": str(event.project_id),
        "project": event.project_path,
        "sha": event.sha,
        "ref": event.ref,
        "author": event.author,
        "event": event.kind,
        "event_id": event.delivery_id,
        "status_name": status_name,
    }
    if event.merge_request_iid is not None:
        context["merge_request_iid"] = str(event.merge_request_iid)
    if event.pipeline_id is not None:
        context["pipeline_id"] = str(event.pipeline_id)
    return context


def gitlab_tags(context: Mapping[str, str], rule: str) -> list[str]:
    tags = ["gitlab", f"gitflow:{rule}"]
    for key in ("project_id", "sha", "ref", "author", "event", "event_id", "status_name"):
        tags.append(f"gitlab.{key}:{context[key]}")
    if "merge_request_iid" in context:
        tags.append(f"gitlab.merge_request_iid:{context['merge_request_iid']}")
    return tags


def context_from_tags(tags: Iterable[str]) -> dict[str, str]:
    """The inverse of `gitlab_tags`, for runs whose flow has no `gitlab` parameter."""
    context = {}
    for tag in tags:
        if tag.startswith("gitlab.") and ":" in tag:
            key, _, value = tag.removeprefix("gitlab.").partition(":")
            context[key] = value
    return context


def launches(
    mapping: GitflowMapping,
    rule: Rule,
    event: GitEvent,
    changed_paths: Iterable[str] | None = None,
    stacks: Mapping[str, str] | None = None,
) -> list[Launch]:
    """What `rule` starts for `event`; merge request rules need the changed paths and stacks."""
    if rule.environments:
        if changed_paths is None:
            raise ValueError(f"rule {rule.name}: the merge request's changed paths are needed")
        environments: list[str | None] = list(
            affected_environments(rule, changed_paths, stacks or {})
        )
        if event.command_environment is not None:  # `socialnet-ops apply staging`: that one only
            environments = [name for name in environments if name == event.command_environment]
    else:
        environments = [None]
    result = []
    for environment in environments:
        values = _values(event, environment)
        deployment = rule.deployment.format_map(values)
        parameters = _render(rule.parameters, values, _numbers(event))
        status_name = f"{mapping.status_prefix}/{deployment.split('/', 1)[1]}"
        context = gitlab_context(event, status_name)
        result.append(
            Launch(
                rule=rule.name,
                deployment=deployment,
                parameters=parameters,
                gitlab=context,
                tags=gitlab_tags(context, rule.name),
                idempotency_key=run_idempotency_key(event, deployment),
                status_name=status_name,
                requires_promotion=rule.requires_promotion,
                post_note=rule.post_note,
            )
        )
    return result


def build_passed(ledger: Ledger, sha: str) -> bool:
    """Whether the exact commit `sha` served the ledger's environment (now or before)."""
    records = [ledger.stable, *ledger.history] if ledger.stable else list(ledger.history)
    return any(record.git_sha == sha for record in records)


def promotion_refusal(source: str, ledger: Ledger, sha: str) -> str | None:
    """Why a build may not be promoted from `source`, or None when it passed there."""
    if build_passed(ledger, sha):
        return None
    serving = (
        f"{ledger.stable.version} ({ledger.stable.git_sha[:SHORT_SHA]})"
        if ledger.stable
        else "nothing"
    )
    return (
        f"commit {sha[:SHORT_SHA]} never served {source} (it serves {serving}); "
        f"deploy it to {source} first"
    )


def command_starts_nothing(rule: Rule, event: GitEvent) -> str:
    """Why a note command starts nothing, said back on its merge request."""
    command, named = event.command or "that", event.command_environment
    if named is not None and named not in rule.environments:
        return (
            f"socialnet-ops {command}: `{named}` is not a stack this command works on "
            f"({', '.join(rule.environments)})"
        )
    if named is not None:
        return (
            f"socialnet-ops {command}: !{event.merge_request_iid} does not touch the stack of "
            f"`{named}`: nothing to {command}"
        )
    return (
        f"socialnet-ops {command}: !{event.merge_request_iid} touches no stack of "
        f"{', '.join(rule.environments)}: nothing to {command}"
    )


# A merge request gives its stack locks back when it is merged or closed, or on `unlock`.
RELEASING_ACTIONS = frozenset({"merge", "close"})


def releases_stack_locks(event: GitEvent) -> bool:
    if event.merge_request_iid is None:
        return False
    if event.kind == "merge_request":
        return event.action in RELEASING_ACTIONS
    return event.kind == "note" and event.command == "unlock"
