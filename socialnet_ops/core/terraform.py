"""Terraform's plain data: errors, plan summaries, drift reports, state-lock holders, the stack's
variables and the shared state of its outputs.

Pure: data in, data out, tested without Terraform. The CLI, the working directory and AWS are
driven by `socialnet_ops.adapters.terraform` and `terraform_plans`; `tasks/terraform.py` wraps them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from socialnet_ops.core.environments import Environment
from socialnet_ops.core.paths import environments_dir, repo_root

# Prefect Variables hold at most 5,000 characters of JSON.
SHARED_STATE_LIMIT = 5000
# Environments whose destroys and replacements wait for a person in the Prefect UI.
GATED_ENVIRONMENTS = ("production",)


class TerraformError(Exception):
    """Provisioning cannot go on; the message says where and what to do."""


class TerraformConfigError(TerraformError):
    """Bad settings or variables, found before Terraform changes anything."""


class MissingCredentialsError(TerraformError):
    pass


class StateLockedError(TerraformError):
    def __init__(self, environment: str, holder: LockInfo | None, waited: str) -> None:
        self.environment = environment
        self.holder = holder
        who = holder.describe() if holder else "an unknown holder"
        super().__init__(
            f"{environment}: the Terraform state is locked by {who}; waited {waited}. "
            "If that run is dead, release the lock with "
            f"`terraform force-unlock {holder.id if holder else 'LOCK_ID'}` in the stack."
        )


class ApplyRejectedError(TerraformError):
    pass


def catalog_source(environment: Environment) -> str:
    """The catalog file of `environment`, as error messages name it (relative to the repository)."""
    path = environments_dir() / f"{environment.name}.yaml"
    return str(path.relative_to(repo_root())) if path.is_relative_to(repo_root()) else str(path)


# --- variables from the catalog ---------------------------------------------------------------


def retention_days(environment: Environment) -> int | None:
    """Age at which a backup leaves every retention tier: the bucket's expiration."""
    if environment.backup is None:
        return None
    keep = environment.backup.retention
    return max(keep.daily, keep.weekly * 7, keep.monthly * 31) + 1


def stack_variables(
    environment: Environment, declared: set[str], source: str, *, emulated: bool
) -> dict[str, Any]:
    """The stack's variables: derived from the environment, then its `terraform.variables`.

    Unknown names are an error here (Terraform only warns about them in a variables file).
    """
    derived: dict[str, Any] = {
        "environment": environment.name,
        "region": environment.cloud.region,
        "domain": environment.domain,
        "dns_zone": environment.dns_zone,
        "node_count": sum(environment.ansible.groups.values()),
        "backup_bucket": environment.backup.bucket if environment.backup else None,
        "backup_retention_days": retention_days(environment),
        "s3_use_path_style": emulated,
    }
    unknown = sorted(set(environment.terraform.variables) - declared)
    if unknown:
        raise TerraformConfigError(
            "\n".join(
                f"{source}: terraform.variables.{name}: not a variable of "
                f"{environment.terraform.stack} (it has: {', '.join(sorted(declared))})"
                for name in unknown
            )
        )
    variables = {name: value for name, value in derived.items() if name in declared}
    variables.update(environment.terraform.variables)
    return {name: value for name, value in variables.items() if value is not None}


# --- plans ---------------------------------------------------------------------------------------

Action = Literal["create", "update", "delete", "replace", "read"]


@dataclass(frozen=True)
class ResourceChange:
    address: str
    action: Action
    attributes: tuple[str, ...] = ()  # top-level attributes that change (update/replace)


@dataclass(frozen=True)
class PlanSummary:
    changes: tuple[ResourceChange, ...] = ()
    output_changes: tuple[str, ...] = ()
    errored: bool = False

    def addresses(self, action: Action) -> list[str]:
        return [change.address for change in self.changes if change.action == action]

    @property
    def counts(self) -> dict[str, int]:
        counts = {"create": 0, "update": 0, "replace": 0, "delete": 0}
        for change in self.changes:
            if change.action in counts:
                counts[change.action] += 1
        return counts

    @property
    def has_changes(self) -> bool:
        return any(change.action != "read" for change in self.changes)

    @property
    def destructive(self) -> list[ResourceChange]:
        """What the plan destroys, replacements included."""
        return [change for change in self.changes if change.action in {"delete", "replace"}]

    def headline(self) -> str:
        counts = self.counts
        return (
            f"{counts['create']} to add, {counts['update']} to change, "
            f"{counts['replace']} to replace, {counts['delete']} to destroy"
        )

    def rows(self) -> list[dict[str, str]]:
        """One row per changing resource, for the plan table artifact."""
        return [
            {
                "address": change.address,
                "action": change.action,
                "attributes": ", ".join(change.attributes),
            }
            for change in self.changes
            if change.action != "read"
        ]


PlanStatus = Literal["clean", "changes"]


@dataclass(frozen=True)
class Plan:
    environment: str
    status: PlanStatus
    summary: PlanSummary
    plan_file: str
    document: str = ""  # the plan's JSON (`terraform show -json`), beside the plan file


def _action(actions: Sequence[str]) -> Action | None:
    kinds = set(actions)
    if kinds == {"delete", "create"}:
        return "replace"
    if len(actions) == 1 and actions[0] in {"create", "update", "delete", "read"}:
        return actions[0]  # type: ignore[return-value]
    return None  # no-op


def _changed_attributes(change: Mapping[str, Any]) -> tuple[str, ...]:
    """What the plan changes on a resource: known new values first, else what becomes unknown.

    Values computed by the provider (a resized node's new public_ip) are consequences, named
    only when nothing known changes (the DNS record whose addresses follow those nodes).
    """
    before = change.get("before") or {}
    after = change.get("after") or {}
    unknown = change.get("after_unknown") or {}
    if not isinstance(before, dict) or not isinstance(after, dict):
        return ()
    pending = (
        {name for name, value in unknown.items() if value is True}
        if isinstance(unknown, dict)
        else set()
    )
    known = {
        name
        for name in set(before) | set(after)
        if name not in pending and before.get(name) != after.get(name)
    }
    names = known or {name for name in pending if name in before}
    # A tag change shows in both `tags` and the provider's merged `tags_all`: name it once.
    if "tags" in names:
        names.discard("tags_all")
    return tuple(sorted(names))


def summarize_plan(plan: Mapping[str, Any]) -> PlanSummary:
    """Summarize `terraform show -json PLANFILE`: what changes, by address.

    `resource_drift` is not read: against emulators it lists harmless read-back noise. A real
    drift that matters shows up as a planned change, which is what `resource_changes` holds.
    """
    changes: list[ResourceChange] = []
    for item in plan.get("resource_changes", []):
        change = item.get("change", {})
        action = _action(change.get("actions", []))
        if action is None:
            continue
        attributes = _changed_attributes(change) if action in {"update", "replace"} else ()
        changes.append(ResourceChange(item["address"], action, attributes))
    outputs = tuple(
        sorted(
            name
            for name, change in (plan.get("output_changes") or {}).items()
            if _action(change.get("actions", [])) not in {None, "read"}
        )
    )
    return PlanSummary(
        changes=tuple(sorted(changes, key=lambda change: change.address)),
        output_changes=outputs,
        errored=bool(plan.get("errored")),
    )


_STREAM_ACTIONS: dict[str, Action] = {
    "create": "create",
    "update": "update",
    "delete": "delete",
    "replace": "replace",
    "read": "read",
}


def read_plan_event(line: str) -> tuple[str, ResourceChange | None]:
    """One line of `terraform plan -json`: the text for the log, and a planned change if any.

    The streamed plan spares the drift check a `show -json`, which starts the provider again only
    to read its schema. `resource_drift` events are not changes (see summarize_plan).
    """
    try:
        event = json.loads(line)
    except ValueError:
        return line, None
    if not isinstance(event, dict):
        return line, None
    text = str(event.get("@message", line))
    if event.get("type") == "diagnostic":
        detail = (event.get("diagnostic") or {}).get("detail")
        if detail:
            text = f"{text}\n{detail}"
    if event.get("type") != "planned_change":
        return text, None
    change = event.get("change") or {}
    action = _STREAM_ACTIONS.get(str(change.get("action")))
    address = (change.get("resource") or {}).get("addr")
    if action is None or not address:
        return text, None
    return text, ResourceChange(address, action)


def needs_approval(
    environment: str, summary: PlanSummary, gated: Sequence[str] = GATED_ENVIRONMENTS
) -> bool:
    """A person approves destroys and replacements in gated environments."""
    return environment in gated and bool(summary.destructive)


# --- drift ---------------------------------------------------------------------------------------

DriftStatus = Literal["clean", "drifted", "locked", "not-provisioned"]


@dataclass(frozen=True)
class DriftReport:
    environment: str
    status: DriftStatus
    changes: list[dict[str, str]] = field(default_factory=list)
    detail: str = ""
    seconds: float = 0.0

    @property
    def addresses(self) -> list[str]:
        return [change["address"] for change in self.changes]


# --- Terraform's error reports and state locks ---------------------------------------------------


def error_block(lines: Sequence[str]) -> str:
    """Terraform's own error reports (each 'Error:' block once), for the exception message."""
    blocks: list[list[str]] = []
    for line in lines:
        if line.lstrip("│ ").startswith("Error:"):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
    if not blocks:
        return "\n".join(lines[-20:])
    unique = dict.fromkeys("\n".join(block).strip() for block in blocks)
    return "\n\n".join(unique)


@dataclass(frozen=True)
class LockInfo:
    id: str = ""
    path: str = ""
    operation: str = ""
    who: str = ""
    version: str = ""
    created: str = ""
    info: str = ""

    def describe(self) -> str:
        parts = [self.who or "someone"]
        if self.operation:
            parts.append(f"running {self.operation.removeprefix('OperationType').lower()}")
        if self.created:
            parts.append(f"since {self.created}")
        if self.id:
            parts.append(f"(lock id {self.id})")
        return " ".join(parts)


_LOCK_FIELDS = {
    "ID": "id",
    "Path": "path",
    "Operation": "operation",
    "Who": "who",
    "Version": "version",
    "Created": "created",
    "Info": "info",
}
_LOCK_LINE = re.compile(r"^[\s│]*(ID|Path|Operation|Who|Version|Created|Info):\s*(.*?)\s*$")


def is_lock_error(lines: Sequence[str]) -> bool:
    return any("Error acquiring the state lock" in line for line in lines)


def parse_lock_holder(lines: Sequence[str]) -> LockInfo | None:
    """The holder in Terraform's 'Error acquiring the state lock' report, if it names one."""
    try:
        start = next(index for index, line in enumerate(lines) if "Lock Info:" in line)
    except StopIteration:
        return None
    found: dict[str, str] = {}
    for line in lines[start + 1 : start + 12]:
        match = _LOCK_LINE.match(line)
        if match and _LOCK_FIELDS[match.group(1)] not in found:
            found[_LOCK_FIELDS[match.group(1)]] = match.group(2)
    return LockInfo(**found) if found else None


def lock_wait(arguments: Sequence[str]) -> str:
    """How long a command waits for the state lock (its `-lock-timeout=`)."""
    for argument in arguments:
        if argument.startswith("-lock-timeout="):
            return argument.split("=", 1)[1]
    return "0s"


# --- outputs into the shared state ---------------------------------------------------------------


def shared_state_name(environment: str) -> str:
    """The Prefect Variable holding an environment's provisioned facts."""
    return f"infra-{environment}"


@dataclass(frozen=True)
class InfraState:
    """What other flows need from provisioning: nodes (Ansible), buckets (backups), zone (DNS).

    Stored as JSON in the Prefect Variable `infra-<env>`:
    `{"environment", "applied_at", "flow_run_id", "nodes": [{"name", "role", "private_ip",
    "public_ip"}], "backup_bucket", "dns_zone", "dns_zone_id", "fqdn", "vpc_id"}`.
    """

    environment: str
    applied_at: str
    flow_run_id: str | None
    nodes: list[dict[str, str]] = field(default_factory=list)
    backup_bucket: str | None = None
    dns_zone: str | None = None
    dns_zone_id: str | None = None
    fqdn: str | None = None
    vpc_id: str | None = None
    # What was applied: the commit, a digest of the code and variables, the state's serial.
    commit: str | None = None
    stack_digest: str | None = None
    serial: int | None = None

    def to_json(self) -> dict[str, Any]:
        document = {
            "environment": self.environment,
            "applied_at": self.applied_at,
            "flow_run_id": self.flow_run_id,
            "nodes": self.nodes,
            "backup_bucket": self.backup_bucket,
            "dns_zone": self.dns_zone,
            "dns_zone_id": self.dns_zone_id,
            "fqdn": self.fqdn,
            "vpc_id": self.vpc_id,
            "commit": self.commit,
            "stack_digest": self.stack_digest,
            "serial": self.serial,
        }
        size = len(json.dumps(document, separators=(",", ":")))
        if size > SHARED_STATE_LIMIT:
            raise TerraformError(
                f"{self.environment}: the outputs take {size} characters of JSON, above the "
                f"{SHARED_STATE_LIMIT} a Prefect Variable holds; read them with `terraform output`"
            )
        return document


def infra_state(
    environment: str,
    outputs: Mapping[str, Any],
    applied_at: str,
    flow_run_id: str | None,
    applied: Mapping[str, Any] | None = None,
) -> InfraState:
    """From `terraform output -json` ({name: {value, type, sensitive}}) to the shared state."""
    values = {
        name: output.get("value")
        for name, output in outputs.items()
        if isinstance(output, Mapping) and not output.get("sensitive")
    }
    nodes = [
        {key: str(node.get(key) or "") for key in ("name", "role", "private_ip", "public_ip")}
        for node in values.get("nodes") or []
    ]
    return InfraState(
        environment=environment,
        applied_at=applied_at,
        flow_run_id=flow_run_id,
        nodes=nodes,
        backup_bucket=values.get("backup_bucket"),
        dns_zone=values.get("dns_zone"),
        dns_zone_id=values.get("dns_zone_id"),
        fqdn=values.get("fqdn"),
        vpc_id=values.get("vpc_id"),
        **{key: (applied or {}).get(key) for key in ("commit", "stack_digest", "serial")},
    )
