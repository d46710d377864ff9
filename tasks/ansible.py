"""Ansible tasks: the inventory, a playbook run whose events stream into the run log, the recap.

The ansible-runner work is in socialnet_ops.adapters.ansible; what events, stats and recaps mean
is in socialnet_ops.core.inventory. Here is what needs Prefect: the run logger, the provision
flow's Prefect Variable and the recap artifacts.
"""

from __future__ import annotations

import time

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL
from prefect.variables import Variable

from socialnet_ops.adapters.ansible import (
    PLAYBOOK,
    execute_playbook,
    inventory_sources,
    prefect_worker_sources,
)
from socialnet_ops.core.inventory import HostRecap, PlaybookRun, recap_report, retry_delay
from socialnet_ops.core.paths import environment_state_dir
from tasks.reporting import artifact_key, markdown_report, table_report


@task(name="build-inventory", cache_policy=NO_CACHE)
def build_node_inventory(env: str, inventory_path: str | None = None) -> list[str]:
    """The inventory sources of `env`: the hosts file, then the environment's group_vars
    (`ansible.source: terraform` reads the provision flow's `infra-<env>` Prefect Variable)."""
    return inventory_sources(
        env,
        inventory_path,
        read_shared_state=lambda name: Variable.get(name, default=None),
        log=get_run_logger(),
    )


@task(name="prefect-worker-settings", cache_policy=NO_CACHE)
def prefect_worker_inventory(inventory: list[str]) -> list[str]:
    """The inventory plus what the prefect_workers nodes need to join this run's control plane:
    its API as they reach it (through the node launcher's relay) and its credential's file."""
    return prefect_worker_sources(
        inventory,
        PREFECT_API_URL.value(),
        PREFECT_API_AUTH_STRING.value() is not None,
        log=get_run_logger(),
    )


@task(
    name="run-playbook",
    cache_policy=NO_CACHE,
    task_run_name="ansible-{playbook}-attempt-{attempt}",
)
def run_playbook(
    env: str,
    inventory: list[str],
    playbook: str = PLAYBOOK,
    check: bool = False,
    limit: str | None = None,
    tags: list[str] | None = None,
    attempt: int = 1,
    source: str | None = None,
) -> PlaybookRun:
    """Run a playbook of infrastructure/ansible/playbooks with every event in the run log.

    `source`: the tree the playbooks and roles come from (the run's commit); None: the working
    tree."""
    log = get_run_logger()
    known_hosts = environment_state_dir(env) / "ansible" / "known_hosts"
    return execute_playbook(
        inventory, playbook, check, limit, tags, attempt, source, log=log, known_hosts=known_hosts
    )


@task(name="wait-before-retry", cache_policy=NO_CACHE)
def wait_before_retry(hosts: list[str], attempt: int, base_seconds: float) -> float:
    """Back off before retrying unreachable hosts (a node rebooting, a flaky link)."""
    delay = retry_delay(base_seconds, attempt)
    get_run_logger().warning(
        "unreachable: %s; attempt %d in %.0f s", ", ".join(hosts), attempt, delay
    )
    time.sleep(delay)
    return delay


@task(name="publish-recap", cache_policy=NO_CACHE)
def publish_recap(env: str, recaps: dict[str, HostRecap], check: bool, seconds: float) -> None:
    """The recap artifact: one row per host (ok, changed, failed, unreachable, time)."""
    report = recap_report(env, recaps, check, seconds)
    table_report(artifact_key("ansible-recap", env), report.rows, report.description)
    markdown_report(artifact_key("configure", env), report.title, report.sections)
