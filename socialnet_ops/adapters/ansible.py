"""Ansible without Prefect: the inventory sources, a playbook run whose events stream into a log.

ansible-runner runs `ansible-playbook`; its event callback is called as each event happens (task
start, host ok/changed/failed/unreachable), and every event becomes a log line, as AWX shows a
job's output. `runner.stats` gives the recap per host. What events and stats *mean* (lines,
recaps, failures) is in socialnet_ops.core.inventory; `tasks/ansible.py` hands in the run logger.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ansible_runner
import yaml

from socialnet_ops.adapters.nodes import ensure_relay, launcher_inventory_path
from socialnet_ops.adapters.postgres import RunLog
from socialnet_ops.core.environments import Environment, load_environment
from socialnet_ops.core.inventory import (
    LOOPBACK_HOSTS,
    PREFECT_WORKER_GROUP,
    RELAY_SLOT_VARIABLE,
    AnsibleCrashedError,
    ConfigurationError,
    InventoryError,
    PlaybookRun,
    api_endpoint,
    brings_known_hosts,
    build_inventory,
    cloud_connection,
    diff_lines,
    event_failed,
    event_line,
    group_hosts,
    group_variables,
    host_addresses,
    inventory_hosts,
    prefect_worker_variables,
    recap_from_stats,
    recap_line,
    relayed_url,
    task_failures,
    terraform_nodes,
)
from socialnet_ops.core.paths import environment_state_dir, repo_root
from socialnet_ops.core.terraform import shared_state_name

ANSIBLE_FOLDER = Path("infrastructure") / "ansible"  # in the run's source tree
ANSIBLE_DIR = repo_root() / ANSIBLE_FOLDER  # the working tree's
PLAYBOOK = "site.yml"
# A playbook that runs longer than this is stuck (a hung package install, a dead SSH channel).
PLAYBOOK_TIMEOUT_SECONDS = 1800
# Mitogen keeps one Python interpreter per host over the SSH connection and runs modules in it:
# no module upload and interpreter start per task, about a third less time per host. Setting
# SOCIALNET_ANSIBLE_STRATEGY=linear (or free) goes back to Ansible's own.
STRATEGY_SETTING = "SOCIALNET_ANSIBLE_STRATEGY"
DEFAULT_STRATEGY = "mitogen_linear"
# The control plane's API credential, a 0600 file on this machine (set for the flows it runs).
AUTH_FILE_SETTING = "SOCIALNET_PREFECT_AUTH_FILE"
# The flow's own Prefect credentials: ansible-playbook has no use for them, and ansible-runner
# records its whole environment in its artifacts.
HIDDEN_FROM_ANSIBLE = ("PREFECT_API_AUTH_STRING", "PREFECT_API_KEY")


def _catalog(environment: Environment) -> str:
    return f"deployments/environments/{environment.name}.yaml"


# --- inventory -------------------------------------------------------------------------------


def _environment_vars(env: str) -> list[str]:
    """The environment's own group_vars (administrators, ...), an inventory source of vars only."""
    folder = ANSIBLE_DIR / "inventories" / env
    return [str(folder)] if (folder / "group_vars").is_dir() else []


def _checked_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise InventoryError(f"{what}: {path} does not exist")
    return path


def inventory_sources(
    env: str,
    inventory_path: str | None,
    *,
    read_shared_state: Callable[[str], Any],
    log: RunLog,
) -> list[str]:
    """The inventory sources of `env`: the hosts file, then the environment's group_vars.

    - `inventory_path` given: that file (tests, a launcher, a hand-written inventory);
    - `ansible.source: terraform`: from the provision flow's shared state `infra-<env>`, read
      with `read_shared_state(name)` (None when it is missing);
    - `ansible.source: launcher`: the inventory the node launcher wrote for `env`;
    - `ansible.source: static`: the catalog's `ansible.path`.
    """
    environment = load_environment(env)
    catalog = _catalog(environment)
    source = environment.ansible.source
    if inventory_path:
        hosts_file = _checked_file(Path(inventory_path), "inventory_path")
    elif source == "static":
        if not environment.ansible.path:
            raise InventoryError(f"{catalog}: ansible.path: a static inventory needs a path")
        hosts_file = _checked_file(
            repo_root() / environment.ansible.path, f"{catalog}: ansible.path"
        )
    elif source == "launcher":
        hosts_file = launcher_inventory_path(env)
        if not hosts_file.is_file():
            raise InventoryError(
                f"{catalog}: ansible.source is launcher, but no nodes run for {env}: start them "
                f"with `python -m socialnet_ops.adapters.nodes up {env}` (root, mmdebstrap, systemd-nspawn)"
            )
    else:
        name = shared_state_name(env)
        infra = read_shared_state(name)
        if not isinstance(infra, dict):
            raise InventoryError(
                f"Prefect Variable {name} is missing: run the provision flow for {env} first"
            )
        nodes = terraform_nodes(
            infra, environment.ansible.groups, source=f"Prefect Variable {name}", catalog=catalog
        )
        hosts_file = environment_state_dir(env) / "ansible" / "inventory.yml"
        hosts_file.parent.mkdir(parents=True, exist_ok=True)
        hosts_file.write_text(
            yaml.safe_dump(build_inventory(nodes, cloud_connection()), sort_keys=False)
        )
    hosts = inventory_hosts(yaml.safe_load(hosts_file.read_text()) or {})
    log.info("inventory %s: %s", hosts_file, ", ".join(f"{h} ({g})" for h, g in hosts.items()))
    return [str(hosts_file), *_environment_vars(env)]


def prefect_worker_sources(
    sources: list[str],
    api_url: str | None,
    auth_required: bool,
    *,
    log: RunLog,
    environ: Mapping[str, str] = os.environ,
) -> list[str]:
    """`sources` plus the settings of the prefect_workers group's role, when the group has hosts.

    The nodes reach this run's API (`api_url`) directly, or through the node launcher's relay
    when it listens on loopback only; the credential goes as the path of its file
    (SOCIALNET_PREFECT_AUTH_FILE), which the role copies with no_log. The settings are written
    beside the hosts file, an inventory source of group vars only.
    """
    hosts_file = Path(sources[0])
    document = yaml.safe_load(hosts_file.read_text()) or {}
    hosts = group_hosts(document, PREFECT_WORKER_GROUP)
    if not hosts:
        return sources
    where = f"{hosts_file}: {PREFECT_WORKER_GROUP} {', '.join(hosts)}"
    if not api_url:
        raise InventoryError(f"{where}: this run has no Prefect API server for their workers")
    auth_file = environ.get(AUTH_FILE_SETTING) or None
    if auth_required and not auth_file:
        raise InventoryError(
            f"{where}: the Prefect API asks for a credential and {AUTH_FILE_SETTING} names no file"
        )
    if auth_file and not Path(auth_file).is_file():
        raise InventoryError(f"{AUTH_FILE_SETTING}: {auth_file} does not exist")
    host, port = api_endpoint(api_url)
    node_url = api_url
    if host in LOOPBACK_HOSTS:
        slot = group_variables(document, PREFECT_WORKER_GROUP).get(RELAY_SLOT_VARIABLE)
        if not isinstance(slot, int):
            raise InventoryError(
                f"{where}: the API listens on {host} only and the group sets no "
                f"{RELAY_SLOT_VARIABLE} (the node launcher's inventories do)"
            )
        node_url = relayed_url(api_url, ensure_relay(slot, port))
    variables = prefect_worker_variables(node_url, auth_file, sys.executable, str(repo_root()))
    settings = hosts_file.with_name(f"{hosts_file.stem}.prefect-workers.yml")
    document = {"all": {"children": {PREFECT_WORKER_GROUP: {"vars": variables}}}}
    settings.write_text(yaml.safe_dump(document, sort_keys=False))
    log.info(
        "Prefect workers on %s: pool %s, queue %s, API %s",
        ", ".join(hosts),
        variables["prefect_worker_pool"],
        variables["prefect_worker_queue"],
        node_url,
    )
    return [*sources, str(settings)]


def inventory_host_names(sources: list[str]) -> list[str]:
    document = yaml.safe_load(Path(sources[0]).read_text()) or {}
    return list(inventory_hosts(document))


# --- a playbook run ----------------------------------------------------------------------------


def strategy() -> str:
    return os.environ.get(STRATEGY_SETTING) or DEFAULT_STRATEGY


def strategy_environ() -> dict[str, str]:
    """The play strategy, and where Ansible finds Mitogen's (inside the installed package)."""
    chosen = strategy()
    environ = {"ANSIBLE_STRATEGY": chosen}
    if chosen.startswith("mitogen"):
        import ansible_mitogen

        plugins = Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"
        environ["ANSIBLE_STRATEGY_PLUGINS"] = str(plugins)
    return environ


def ansible_environ(
    extra: Mapping[str, str] | None = None, source: Path | None = None
) -> dict[str, str]:
    """The environment of every ansible-playbook run: the project's ansible.cfg, no colours."""
    return {
        "ANSIBLE_CONFIG": str((source or repo_root()) / ANSIBLE_FOLDER / "ansible.cfg"),
        # ansible-runner turns host key checking off unless told otherwise; ansible.cfg's word
        # would not reach the run.
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        **dict.fromkeys(HIDDEN_FROM_ANSIBLE, ""),
        **strategy_environ(),
        **(extra or {}),
    }


def known_hosts_settings(known_hosts: Path | None) -> dict[str, str]:
    """Logins check host keys against `known_hosts` (ansible.cfg turns checking on; Mitogen then
    insists on a known key, so unknown hosts are recorded first by `record_host_keys`)."""
    if known_hosts is None:
        return {}
    return {"ANSIBLE_SSH_COMMON_ARGS": f"-o UserKnownHostsFile={known_hosts}"}


def record_host_keys(hosts_file: Path, known_hosts: Path, log: RunLog) -> list[str]:
    """Trust on first use, recorded: the host key of each host of the inventory that
    `known_hosts` does not know yet is scanned once and kept; a key that later changes is refused
    by ssh. Inventories that bring their own host keys (the node launcher's) are left alone.

    OpenSSH's `accept-new` would do this inside ssh, but Mitogen, the strategy the runs use,
    sets `StrictHostKeyChecking yes` itself, and its first `-o` wins."""
    inventory = yaml.safe_load(hosts_file.read_text()) or {}
    if brings_known_hosts(inventory):
        return []
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    known_hosts.touch(mode=0o600, exist_ok=True)
    recorded = []
    for host, address in host_addresses(inventory).items():
        found = subprocess.run(
            ["ssh-keygen", "-F", address, "-f", str(known_hosts)], capture_output=True, check=False
        )
        if found.returncode == 0:
            continue
        scanned = subprocess.run(
            ["ssh-keyscan", "-T", "5", "-t", "ed25519", address],
            capture_output=True,
            text=True,
            check=False,
        )
        lines = [line for line in scanned.stdout.splitlines() if line and not line.startswith("#")]
        if not lines:
            log.warning(
                "%s (%s): no SSH host key could be read; its login will fail", host, address
            )
            continue
        with known_hosts.open("a") as known:
            known.write("\n".join(lines) + "\n")
        log.info("%s (%s): host key recorded on first use in %s", host, address, known_hosts)
        recorded.append(host)
    return recorded


def playbook_environment() -> dict[str, str]:
    """For a plain `ansible-playbook` run outside the flow (benchmarks, by hand)."""
    return {**os.environ, **ansible_environ()}


def execute_playbook(
    inventory: list[str],
    playbook: str,
    check: bool,
    limit: str | None,
    tags: list[str] | None,
    attempt: int,
    source: str | None,
    *,
    log: RunLog,
    known_hosts: Path | None = None,
) -> PlaybookRun:
    """Run a playbook of infrastructure/ansible/playbooks with every event in `log`.

    `source`: the tree the playbooks and roles come from (the run's commit); None: the working
    tree. `known_hosts`: the environment's recorded host keys (trust on first use; an inventory
    that brings its own, as the node launcher's does, takes precedence)."""
    root = Path(source) if source else repo_root()
    playbook_path = root / ANSIBLE_FOLDER / "playbooks" / playbook
    if not playbook_path.is_file():
        raise ConfigurationError(f"no playbook {playbook} in {playbook_path.parent}")
    events: list[dict[str, Any]] = []

    def on_event(event: dict[str, Any]) -> bool:
        events.append(event)
        line = event_line(event)
        if line is not None:
            (log.error if event_failed(event) else log.info)(line)
        if check:
            for diff in diff_lines(event):
                log.info("    %s", diff)
        return True

    mode = " in check mode (dry run with diff)" if check else ""
    log.info(
        "ansible-playbook %s%s, attempt %d, strategy %s%s%s",
        playbook,
        mode,
        attempt,
        strategy(),
        f", limit {limit}" if limit else "",
        f", tags {','.join(tags)}" if tags else "",
    )
    if known_hosts is not None:
        record_host_keys(Path(inventory[0]), known_hosts, log)
    # A private folder per run: ansible-runner keeps its artifacts and SSH control sockets there.
    private = Path(tempfile.mkdtemp(prefix="socialnet-ansible-"))
    started = time.monotonic()
    try:
        runner = ansible_runner.run(
            private_data_dir=str(private),
            playbook=str(playbook_path),
            inventory=inventory,
            envvars=ansible_environ(known_hosts_settings(known_hosts), source=root),
            limit=limit,
            tags=",".join(tags) if tags else None,
            cmdline="--check --diff" if check else None,
            event_handler=on_event,
            quiet=True,
            timeout=PLAYBOOK_TIMEOUT_SECONDS,
        )
        seconds = round(time.monotonic() - started, 2)
        stats = runner.stats
        if runner.rc == 250 or stats is None or runner.status in {"timeout", "canceled"}:
            tail = [line for line in (runner.stdout.read() or "").splitlines() if line.strip()]
            raise AnsibleCrashedError(
                f"ansible-playbook {playbook} ended with rc {runner.rc} ({runner.status}) "
                "before any recap:\n" + "\n".join(tail[-15:])
            )
    finally:
        shutil.rmtree(private, ignore_errors=True)
    # Every host the run targeted is in the stats, unreachable ones too.
    recaps = recap_from_stats(stats, events)
    failures = [asdict(failure) for failure in task_failures(events)]
    log.info("recap: %s", recap_line(recaps))
    return PlaybookRun(attempt, runner.rc, runner.status, seconds, limit, recaps, failures)
