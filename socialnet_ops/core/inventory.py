"""Ansible without Prefect: inventories from Terraform outputs or launched nodes, run recaps.

Plain data in, plain data out: the configure flow (`flows/configure.py`) runs ansible-runner
through `socialnet_ops/adapters/ansible.py` and hands its events and stats to the functions here.

Every inventory has one shape, whatever built it:

    all:
      vars: {connection settings ...}
      children:
        k8s_nodes:
          children:
            control_plane: {hosts: {cp-0: {ansible_host: 10.0.1.10}}}
            workers:       {hosts: {worker-1: {...}, worker-2: {...}}}
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

NODE_GROUP = "k8s_nodes"
KNOWN_GROUPS = ("control_plane", "workers")
# Ansible host names: what cloud tags and the launcher produce; never a "/" (ansible-runner).
HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# Debian's cloud images log in as `admin` with the key given at launch, then sudo.
CLOUD_USER = "admin"
USER_SETTING = "SOCIALNET_ANSIBLE_USER"
KEY_SETTING = "SOCIALNET_ANSIBLE_PRIVATE_KEY"
# Nodes that run a Prefect worker of the control plane (roles/prefect_worker), a group beside
# k8s_nodes; the node launcher sets the slot whose relay leads them to the control plane's API.
PREFECT_WORKER_GROUP = "prefect_workers"
RELAY_SLOT_VARIABLE = "prefect_worker_relay_slot"
# Node workers take the runs of their own queue of the control plane's pool, never the releases
# of `default` (they need this machine's tools and state): roles/prefect_worker/README.md.
WORK_POOL = "socialnet"
NODE_WORK_QUEUE = "node"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class InventoryError(Exception):
    """An inventory cannot be built; the message names where the bad value came from."""


@dataclass(frozen=True)
class InventoryNode:
    name: str
    group: str
    address: str
    variables: Mapping[str, Any] = field(default_factory=dict)


def build_inventory(
    nodes: Sequence[InventoryNode],
    variables: Mapping[str, Any] | None = None,
    groups: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The inventory document (YAML/JSON shape) of `nodes`, with `variables` for all hosts.

    `groups`: more groups beside k8s_nodes ({name: {"hosts": {...}, "vars": {...}}}) whose hosts
    are among `nodes`."""
    if not nodes:
        raise InventoryError("an inventory needs at least one node")
    seen: set[str] = set()
    by_group: dict[str, dict[str, Any]] = {}
    for node in nodes:
        if not HOST_NAME.match(node.name):
            raise InventoryError(
                f"node {node.name!r}: not a usable host name (letters, digits, '.', '_', '-')"
            )
        if node.name in seen:
            raise InventoryError(f"node {node.name!r} appears twice")
        if not node.address:
            raise InventoryError(f"node {node.name!r} has no address")
        seen.add(node.name)
        hosts = by_group.setdefault(node.group, {"hosts": {}})["hosts"]
        hosts[node.name] = {"ansible_host": node.address, **node.variables}
    ordered = {group: by_group[group] for group in sorted(by_group, key=_group_order)}
    children: dict[str, Any] = {NODE_GROUP: {"children": ordered}}
    for name, body in (groups or {}).items():
        unknown = sorted(set(body.get("hosts") or {}) - seen)
        if name in children or name in by_group or unknown:
            raise InventoryError(
                f"group {name!r}: " + (f"no node {unknown[0]!r}" if unknown else "already a group")
            )
        children[name] = dict(body)
    return {"all": {"vars": dict(variables or {}), "children": children}}


def _group_order(group: str) -> tuple[int, str]:
    return (KNOWN_GROUPS.index(group) if group in KNOWN_GROUPS else len(KNOWN_GROUPS), group)


def inventory_hosts(inventory: Mapping[str, Any]) -> dict[str, str]:
    """Host name -> group of an inventory document in the shape above."""
    children = inventory.get("all", {}).get("children", {}).get(NODE_GROUP, {}).get("children", {})
    return {
        host: group
        for group, body in (children or {}).items()
        for host in ((body or {}).get("hosts") or {})
    }


def host_addresses(inventory: Mapping[str, Any]) -> dict[str, str]:
    """Host name -> the address Ansible logs into (`ansible_host`, else the name)."""
    children = inventory.get("all", {}).get("children", {}).get(NODE_GROUP, {}).get("children", {})
    return {
        host: str((variables or {}).get("ansible_host") or host)
        for body in (children or {}).values()
        for host, variables in ((body or {}).get("hosts") or {}).items()
    }


def brings_known_hosts(inventory: Mapping[str, Any]) -> bool:
    """Whether the inventory names its own host keys (the node launcher's inventories do)."""
    args = str((inventory.get("all", {}).get("vars") or {}).get("ansible_ssh_common_args", ""))
    return "UserKnownHostsFile" in args


def group_hosts(inventory: Mapping[str, Any], group: str) -> list[str]:
    """The hosts of a group directly under `all` (e.g. prefect_workers)."""
    body = (inventory.get("all", {}).get("children") or {}).get(group) or {}
    return list(body.get("hosts") or {})


def group_variables(inventory: Mapping[str, Any], group: str) -> dict[str, Any]:
    body = (inventory.get("all", {}).get("children") or {}).get(group) or {}
    return dict(body.get("vars") or {})


# --- Prefect workers on nodes ------------------------------------------------------------------


def prefect_worker_group(hosts: Sequence[str], relay_slot: int) -> dict[str, Any]:
    """The prefect_workers group of a launcher inventory: its hosts and the slot of their relay."""
    return {"hosts": {host: {} for host in hosts}, "vars": {RELAY_SLOT_VARIABLE: relay_slot}}


def api_endpoint(api_url: str) -> tuple[str, int]:
    """Host and port of a Prefect API URL (http://127.0.0.1:4200/api -> ("127.0.0.1", 4200))."""
    parts = urlsplit(api_url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InventoryError(f"Prefect API URL {api_url!r}: expected http(s)://host:port/api")
    if parts.username or parts.password:
        raise InventoryError(
            "the Prefect API URL carries a user or password: give it as PREFECT_API_AUTH_STRING"
        )
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def relayed_url(api_url: str, relay: str) -> str:
    """`api_url` with its host and port replaced by the relay's `host:port`, path kept."""
    api_endpoint(api_url)
    parts = urlsplit(api_url)
    return urlunsplit((parts.scheme, relay, parts.path, parts.query, parts.fragment))


def prefect_worker_variables(
    api_url: str,
    auth_file: str | None,
    python: str,
    project: str,
    pool: str = WORK_POOL,
    queue: str = NODE_WORK_QUEUE,
) -> dict[str, Any]:
    """The variables of roles/prefect_worker, as the configure flow hands them to the group.

    `auth_file` is a path on the controller (the role copies the file, never its content through
    a variable); `python` and `project` are paths the node shares with the control plane."""
    return {
        "prefect_worker_api_url": api_url,
        "prefect_worker_auth_file": auth_file or "",
        "prefect_worker_python": python,
        "prefect_worker_project_dir": project,
        "prefect_worker_pool": pool,
        "prefect_worker_queue": queue,
    }


# --- from the provision flow's outputs -------------------------------------------------------


def terraform_nodes(
    infra: Mapping[str, Any],
    expected: Mapping[str, int],
    *,
    source: str,
    catalog: str,
    address: str = "auto",
) -> list[InventoryNode]:
    """Nodes from the shared state `infra-<env>` ({"nodes": [{name, role, private_ip, public_ip}]}).

    `address`: "public", "private", or "auto" (public when the node has one: the flow runs outside
    the VPC unless it runs on a bastion). The node count per group must match the catalog's
    `ansible.groups`, else the inventory would silently skip or add servers.
    """
    raw_nodes = infra.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise InventoryError(
            f"{source}: no nodes recorded; run the provision flow for "
            f"{infra.get('environment', 'this environment')} first"
        )
    nodes: list[InventoryNode] = []
    for position, raw in enumerate(raw_nodes):
        where = f"{source}: nodes[{position}]"
        if not isinstance(raw, Mapping):
            raise InventoryError(f"{where}: expected a mapping with name, role and addresses")
        name, role = str(raw.get("name") or ""), str(raw.get("role") or "")
        if role not in expected:
            raise InventoryError(
                f"{where}: role {role!r} is not a group of {catalog} ansible.groups "
                f"({', '.join(expected)})"
            )
        public, private = str(raw.get("public_ip") or ""), str(raw.get("private_ip") or "")
        if address == "public":
            chosen = public
        elif address == "private":
            chosen = private
        else:
            chosen = public or private
        if not chosen:
            raise InventoryError(f"{where}: node {name!r} has no {address} address")
        nodes.append(InventoryNode(name, role, chosen))
    counts = {group: sum(1 for node in nodes if node.group == group) for group in expected}
    wrong = {group: count for group, count in counts.items() if count != expected[group]}
    if wrong:
        detail = ", ".join(
            f"{group}: {count} provisioned, {expected[group]} expected"
            for group, count in wrong.items()
        )
        raise InventoryError(
            f"{source}: {detail} ({catalog} ansible.groups); run the provision flow again"
        )
    return nodes


def cloud_connection(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """How Ansible logs into rented servers: the image's user, sudo, the operator's key."""
    environ = os.environ if environ is None else environ
    variables: dict[str, Any] = {
        "ansible_user": environ.get(USER_SETTING) or CLOUD_USER,
        "ansible_become": True,
    }
    if environ.get(KEY_SETTING):
        variables["ansible_ssh_private_key_file"] = environ[KEY_SETTING]
    return variables


# --- events and recaps ----------------------------------------------------------------------


@dataclass
class HostRecap:
    """One host's line of the recap, as AWX shows it, plus time and attempts."""

    host: str
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0
    seconds: float = 0.0
    attempts: int = 1
    # Why it was unreachable, when that is worth saying (a changed SSH host key).
    reason: str = ""

    @property
    def status(self) -> str:
        if self.unreachable:
            return "unreachable"
        if self.failed:
            return "failed"
        return "changed" if self.changed else "ok"

    def row(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}


@dataclass(frozen=True)
class TaskFailure:
    host: str
    task: str
    message: str
    role: str = ""

    def describe(self) -> str:
        where = f"{self.role} : {self.task}" if self.role else self.task
        return f"{self.host}: task '{where}' failed: {self.message}"


_STATS_KEYS = {
    "ok": "ok",
    "changed": "changed",
    "failures": "failed",
    "dark": "unreachable",
    "skipped": "skipped",
    "rescued": "rescued",
    "ignored": "ignored",
}


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def host_seconds(events: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Per host, from its first task's start to its last task's end (runner_on_* events)."""
    spans: dict[str, list[datetime]] = {}
    for event in events:
        data = event.get("event_data") or {}
        host = data.get("host")
        if not host or not str(event.get("event", "")).startswith("runner_on_"):
            continue
        start, end = _parse_time(data.get("start")), _parse_time(data.get("end"))
        span = spans.setdefault(host, [])
        span += [moment for moment in (start, end) if moment is not None]
    return {
        host: round((max(times) - min(times)).total_seconds(), 2) if times else 0.0
        for host, times in spans.items()
    }


def recap_from_stats(
    stats: Mapping[str, Mapping[str, int]] | None,
    events: Sequence[Mapping[str, Any]],
    hosts: Iterable[str] = (),
) -> dict[str, HostRecap]:
    """The recap per host from `runner.stats` ({"ok": {host: n}, "dark": {...}, ...}) and events."""
    recaps = {host: HostRecap(host) for host in hosts}
    for key, attribute in _STATS_KEYS.items():
        for host, count in ((stats or {}).get(key) or {}).items():
            setattr(recaps.setdefault(host, HostRecap(host)), attribute, int(count))
    for host, seconds in host_seconds(events).items():
        recaps.setdefault(host, HostRecap(host)).seconds = seconds
    for host in changed_host_keys(events):
        recaps.setdefault(host, HostRecap(host)).reason = HOST_KEY_CHANGED
    return dict(sorted(recaps.items()))


# What ssh, and Mitogen for it, say when a host answers with another key than the one recorded.
_HOST_KEY_MARKERS = (
    "REMOTE HOST IDENTIFICATION HAS CHANGED",
    "Host key verification failed",
    "mismatching host key",
)
HOST_KEY_CHANGED = (
    "its SSH host key is not the one recorded for it (a rebuilt node: remove its old key with "
    "`ssh-keygen -R <address> -f <known_hosts>`; otherwise someone may be in between)"
)


def changed_host_keys(events: Iterable[Mapping[str, Any]]) -> list[str]:
    """Hosts ssh refused because their host key changed: retrying them cannot help."""
    hosts = set()
    for event in events:
        if event.get("event") != "runner_on_unreachable":
            continue
        data = event.get("event_data") or {}
        text = str(data.get("res") or {})
        if any(marker in text for marker in _HOST_KEY_MARKERS):
            hosts.add(str(data.get("host", "?")))
    return sorted(hosts)


def merge_recaps(
    earlier: Mapping[str, HostRecap], retried: Mapping[str, HostRecap]
) -> dict[str, HostRecap]:
    """After retrying some hosts, their last attempt counts; time adds up across attempts."""
    merged = dict(earlier)
    for host, recap in retried.items():
        before = earlier.get(host)
        if before is not None:
            recap.attempts = before.attempts + 1
            recap.seconds = round(before.seconds + recap.seconds, 2)
        merged[host] = recap
    return dict(sorted(merged.items()))


def _message(result: Mapping[str, Any]) -> str:
    """The most telling line of a failed module result (msg, stderr, a loop item's msg)."""
    for key in ("msg", "stderr", "stdout", "module_stderr", "exception"):
        value = result.get(key)
        if value:
            text = str(value).strip()
            return (
                text.splitlines()[-1][:500] if key in {"exception", "module_stderr"} else text[:500]
            )
    for item in result.get("results") or []:
        if isinstance(item, Mapping) and item.get("failed"):
            return _message(item)
    return "no message"


def task_failures(events: Iterable[Mapping[str, Any]]) -> list[TaskFailure]:
    """Failed tasks that stop a host (ignored and rescued failures are not failures)."""
    failures: list[TaskFailure] = []
    for event in events:
        if event.get("event") != "runner_on_failed":
            continue
        data = event.get("event_data") or {}
        if data.get("ignore_errors"):
            continue
        failures.append(
            TaskFailure(
                host=str(data.get("host", "?")),
                task=str(data.get("task") or data.get("task_action") or "?"),
                message=_message(data.get("res") or {}),
                role=str(data.get("role") or ""),
            )
        )
    return failures


def unreachable_hosts(recaps: Mapping[str, HostRecap]) -> list[str]:
    return sorted(host for host, recap in recaps.items() if recap.unreachable)


def retriable_hosts(recaps: Mapping[str, HostRecap]) -> list[str]:
    """Unreachable hosts a later attempt may reach (not those whose host key changed)."""
    return [host for host in unreachable_hosts(recaps) if not recaps[host].reason]


def failed_hosts(recaps: Mapping[str, HostRecap]) -> list[str]:
    return sorted(host for host, recap in recaps.items() if recap.failed and not recap.unreachable)


# One line per event in the run log, AWX-style: "ok: [cp-0] common : Install ... (1.2 s)".
_STATUS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipping",
    "runner_on_unreachable": "unreachable",
    "runner_retry": "retrying",
    "runner_item_on_failed": "failed item",
}


def _duration(data: Mapping[str, Any]) -> str:
    seconds = data.get("duration")
    return f" ({seconds:.1f} s)" if isinstance(seconds, int | float) else ""


def event_line(event: Mapping[str, Any]) -> str | None:
    """The run-log line of an ansible-runner event, or None for events not worth a line."""
    kind = str(event.get("event", ""))
    data = event.get("event_data") or {}
    task = data.get("task", "")
    where = f"{data['role']} : {task}" if data.get("role") else task
    if kind == "playbook_on_play_start":
        return f"PLAY [{data.get('play', '')}]"
    if kind in {"playbook_on_task_start", "playbook_on_handler_task_start"}:
        return None  # the host lines below name the task; a line per start doubles the log
    if kind in _STATUS:
        host = data.get("host", "?")
        result = data.get("res") or {}
        status = _STATUS[kind]
        if kind == "runner_on_ok" and result.get("changed"):
            status = "changed"
        if kind == "runner_on_ok" and "censored" in result:
            status = "done (no_log)"  # ansible-runner hides a no_log result, `changed` too
        if kind == "runner_on_failed" and data.get("ignore_errors"):
            status = "failed (ignored)"
        line = f"{status}: [{host}] {where}{_duration(data)}"
        if kind in {"runner_on_failed", "runner_on_unreachable", "runner_item_on_failed"}:
            line += f": {_message(result)}"
        return line
    if kind == "playbook_on_stats":
        return "PLAY RECAP"
    if kind == "warning":
        return f"[WARNING] {data.get('warning', '')}".strip()
    if kind == "error":
        return f"[ERROR] {data.get('error', '')}".strip()
    return None


def diff_lines(event: Mapping[str, Any]) -> list[str]:
    """The diff a task printed with --diff (its own `runner_on_file_diff` event), line by line."""
    if event.get("event") != "runner_on_file_diff":
        return []
    return [line for line in str(event.get("stdout") or "").splitlines() if line.strip()]


def recap_rows(recaps: Mapping[str, HostRecap]) -> list[dict[str, Any]]:
    """Table artifact rows, one per host."""
    return [
        {
            "host": recap.host,
            "status": recap.status,
            "ok": recap.ok,
            "changed": recap.changed,
            "failed": recap.failed,
            "unreachable": recap.unreachable,
            "skipped": recap.skipped,
            "seconds": recap.seconds,
            "attempts": recap.attempts,
        }
        for recap in recaps.values()
    ]


def event_failed(event: Mapping[str, Any]) -> bool:
    """A failed or unreachable host whose failure is not ignored: an error line in the run log."""
    return event.get("event", "") in {"runner_on_failed", "runner_on_unreachable"} and not (
        event.get("event_data") or {}
    ).get("ignore_errors")


def recap_line(recaps: Mapping[str, HostRecap]) -> str:
    """The run-log recap after a playbook run: ok, changed, failed and unreachable per host."""
    return "; ".join(
        f"{r.host} ok={r.ok} changed={r.changed} failed={r.failed} unreachable={r.unreachable}"
        for r in recaps.values()
    )


# --- a playbook run and its report ----------------------------------------------------------


class ConfigurationError(Exception):
    """Nodes could not be configured; the message names the hosts and tasks.

    `hosts` holds the recap row of every host, so callers see which hosts did converge.
    """

    def __init__(self, message: str, hosts: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.hosts = hosts or {}


class AnsibleCrashedError(ConfigurationError):
    """ansible-playbook itself failed (rc 250, no stats): a broken playbook, inventory or setup."""


@dataclass
class PlaybookRun:
    """What one ansible-playbook run left: its recap per host and the tasks that failed."""

    attempt: int
    rc: int
    status: str
    seconds: float
    limit: str | None
    recaps: dict[str, HostRecap] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)


def retry_delay(base_seconds: float, attempt: int) -> float:
    """The back-off before `attempt` (2, 3, ...) at unreachable hosts: doubled each time."""
    return base_seconds * 2 ** (attempt - 2)


@dataclass(frozen=True)
class RecapReport:
    """The recap artifacts of a configure run: a table, one row per host, and a summary."""

    rows: list[dict[str, Any]]
    description: str
    title: str
    sections: dict[str, Any]


def recap_report(
    env: str, recaps: Mapping[str, HostRecap], check: bool, seconds: float
) -> RecapReport:
    mode = "check mode: changes that would be made" if check else "converge"
    rows = recap_rows(recaps)
    return RecapReport(
        rows=rows,
        description=f"Ansible recap for {env} ({mode}), {seconds:.1f} s",
        title=f"Configured {env}" if not check else f"Checked {env} (dry run)",
        sections={
            "hosts": [
                f"{r['host']}: {r['status']}, ok={r['ok']} changed={r['changed']} "
                f"failed={r['failed']} unreachable={r['unreachable']}, {r['seconds']} s, "
                f"{r['attempts']} attempt(s)"
                for r in rows
            ],
            "mode": mode,
            "seconds": f"{seconds:.1f}",
        },
    )
