"""configure: make an environment's servers ready for Kubernetes with Ansible."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from flows.common import StepClock, checked_environment, checked_source
from socialnet_ops.adapters.ansible import PLAYBOOK
from socialnet_ops.adapters.nodes import NodeError, requirements_problem, up
from socialnet_ops.core.environments import load_environment
from socialnet_ops.core.inventory import (
    ConfigurationError,
    HostRecap,
    TaskFailure,
    failed_hosts,
    merge_recaps,
    retriable_hosts,
    unreachable_hosts,
)
from socialnet_ops.core.results import ConfigureResult
from tasks.ansible import (
    build_node_inventory,
    prefect_worker_inventory,
    publish_recap,
    run_playbook,
    wait_before_retry,
)
from tasks.reporting import emit, publish

# Unreachable hosts get this many more attempts (a node still booting, a flaky network).
UNREACHABLE_RETRIES = 2
RETRY_BACKOFF_SECONDS = 5.0


def _outcome_error(recaps: dict[str, HostRecap], failures: list[dict[str, str]]) -> str | None:
    """The message naming each failed host and task, and each host still unreachable."""
    problems = [
        TaskFailure(**failure).describe()
        for failure in failures
        if failure["host"] in failed_hosts(recaps)
    ]
    problems += [
        f"{host}: {recaps[host].reason}"
        for host in unreachable_hosts(recaps)
        if recaps[host].reason
    ]
    unreachable = retriable_hosts(recaps)
    if unreachable:
        attempts = max(recaps[host].attempts for host in unreachable)
        problems.append(f"unreachable after {attempts} attempt(s): {', '.join(unreachable)}")
    if not problems:
        return None
    done = [host for host, recap in recaps.items() if recap.status in {"ok", "changed"}]
    return "; ".join(problems) + f" (configured: {', '.join(done) or 'none'})"


@flow(name="configure", flow_run_name="configure-{env}")
def configure(
    env: str,
    check: bool = False,
    limit: str | None = None,
    tags: list[str] | None = None,
    inventory_path: str | None = None,
    playbook: str = PLAYBOOK,
    unreachable_retries: int = UNREACHABLE_RETRIES,
    retry_backoff_seconds: float = RETRY_BACKOFF_SECONDS,
    ref: str | None = None,
) -> ConfigureResult:
    """inventory (+ the control plane's API for the nodes' Prefect workers) -> playbook (events
    in the run log) -> retry unreachable hosts -> recap.

    `check`: a dry run with diffs, nothing changes on the nodes. `limit` and `tags` are
    ansible-playbook's. `inventory_path` replaces the catalog's inventory source (tests, nodes
    from the launcher); otherwise cloud environments read the provision flow's `infra-<env>`.
    `ref`: the commit whose playbooks and roles run (None: the working tree).
    """
    checked_environment(env)
    code = str(checked_source(ref).root)
    clock = StepClock()
    with clock("inventory"):
        inventory = prefect_worker_inventory(build_node_inventory(env, inventory_path))
    with clock("playbook"):
        run = run_playbook(env, inventory, playbook, check, limit, tags, 1, code)
        recaps, failures = run.recaps, list(run.failures)
        for attempt in range(2, 2 + unreachable_retries):
            unreachable = retriable_hosts(recaps)
            if not unreachable:
                break
            wait_before_retry(unreachable, attempt, retry_backoff_seconds)
            retry = run_playbook(
                env, inventory, playbook, check, ",".join(unreachable), tags, attempt, code
            )
            recaps = merge_recaps(recaps, retry.recaps)
            failures += retry.failures
    publish_recap(env, recaps, check, clock.seconds["playbook"])
    problem = _outcome_error(recaps, failures)
    hosts = {host: recap.status for host, recap in recaps.items()}
    rows = {host: recap.row() for host, recap in recaps.items()}
    if problem:
        emit("nodes.configuration-failed", env, hosts=hosts, check=check, reason=problem[:300])
        raise ConfigurationError(f"{env}: {problem}", rows)
    return publish(
        ConfigureResult(
            environment=env,
            flow_run_id=flow_run.get_id(),
            check=check,
            hosts=rows,
            changed=sum(recap.changed for recap in recaps.values()),
            seconds=clock.seconds,
        )
    )


def configure_launcher_nodes(
    env: str = "local", ref: str | None = None
) -> ConfigureResult | dict[str, Any]:
    """For `make demo`: start `env`'s nodes on this machine and configure them, where it can.

    Returns the flow's result, or `"configured": False` and the reason (not root, mmdebstrap or
    systemd-nspawn missing). The nodes keep running until
    `python -m socialnet_ops.adapters.nodes down <env>`.
    """
    problem = requirements_problem()
    if problem:
        return {"environment": env, "configured": False, "reason": problem}
    environment = load_environment(env)
    try:
        up(env, environment.ansible.groups)
    except NodeError as error:
        return {"environment": env, "configured": False, "reason": str(error)}
    return configure(env, ref=ref)
