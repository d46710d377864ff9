"""Configure fan-out: the configure flow on 1 node versus 4, and the flow versus plain Ansible.

Every run starts from fresh nodes (systemd-nspawn containers from the cached base image, see
socialnet_ops/adapters/nodes.py), so each one is a full converge. Needs root, mmdebstrap and
systemd-nspawn (infrastructure/bootstrap/install-node-tools.sh).

Prints one JSON line: {"benchmark": "configure_fanout", "one_node_s", "four_nodes_s", "ratio",
"raw_playbook_s", "flow_s", "flow_overhead_ratio", ...}. Goals: ratio <= 2.0 (the nodes and the
controller share the machine's cores), flow_overhead_ratio <= 1.1. `flow_s` is the 4-node flow
run (the same measurement as `four_nodes_s`). Each measurement is taken `--rounds` times, in turn
(1 node, raw 4, flow 4, then again), and the fastest is kept: single runs on a shared 2-core
machine vary by 10-20%. `load_average` (1 min, before and after) says how busy the machine was.
The play strategy is the flow's (Mitogen's mitogen_linear unless SOCIALNET_ANSIBLE_STRATEGY says
otherwise), for the raw runs too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from socialnet_ops.core.results import ConfigureResult

FOUR = {"control_plane": 1, "workers": 3}
ONE = {"control_plane": 1}


def _variables(nodes: Any) -> dict[str, Any]:
    return {"common_admin_users": [{"name": "ops", "ssh_keys": [nodes.public_key]}]}


def flow_run(groups: dict[str, int], folder: Path) -> tuple[float, ConfigureResult]:
    from flows.configure import configure
    from socialnet_ops.adapters.nodes import running_nodes

    with running_nodes(groups) as nodes:
        inventory = nodes.write_inventory(folder / "flow-inventory.yml", _variables(nodes))
        started = time.monotonic()
        result = configure("local", inventory_path=str(inventory))
        seconds = time.monotonic() - started
    return seconds, result


def raw_run(groups: dict[str, int], folder: Path) -> float:
    """`ansible-playbook` as a person would run it: same playbook, config and kind of nodes."""
    from socialnet_ops.adapters.ansible import ANSIBLE_DIR, PLAYBOOK, playbook_environment
    from socialnet_ops.adapters.nodes import running_nodes

    with running_nodes(groups) as nodes:
        inventory = nodes.write_inventory(folder / "raw-inventory.yml", _variables(nodes))
        control = tempfile.mkdtemp(prefix="socialnet-raw-cp-")
        started = time.monotonic()
        result = subprocess.run(
            ["ansible-playbook", "-i", str(inventory), str(ANSIBLE_DIR / "playbooks" / PLAYBOOK)],
            env={**playbook_environment(), "ANSIBLE_SSH_CONTROL_PATH_DIR": control},
            capture_output=True,
            text=True,
        )
        seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"ansible-playbook failed ({result.returncode}):\n{result.stdout[-3000:]}")
    return seconds


def main() -> None:
    from prefect.testing.utilities import prefect_test_harness

    from socialnet_ops.adapters.ansible import strategy
    from socialnet_ops.adapters.nodes import ensure_image, requirements_problem

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="runs of each; fastest kept")
    args = parser.parse_args()

    problem = requirements_problem()
    if problem:
        print(json.dumps({"benchmark": "configure_fanout", "error": problem}))
        sys.exit(1)
    ensure_image(lambda line: print(line, file=sys.stderr))
    load_before = os.getloadavg()[0]
    with (
        prefect_test_harness(server_startup_timeout=120),
        tempfile.TemporaryDirectory(prefix="snb-configure-") as scratch,
    ):
        folder = Path(scratch)
        ones: list[float] = []
        raws: list[float] = []
        fours: list[float] = []
        for _ in range(args.rounds):
            ones.append(flow_run(ONE, folder)[0])
            raws.append(raw_run(FOUR, folder))
            seconds, four = flow_run(FOUR, folder)
            fours.append(seconds)
    one_node_s, raw_playbook_s, four_nodes_s = min(ones), min(raws), min(fours)
    changed = {host: recap["changed"] for host, recap in four.hosts.items()}
    result = {
        "benchmark": "configure_fanout",
        "one_node_s": round(one_node_s, 1),
        "four_nodes_s": round(four_nodes_s, 1),
        "ratio": round(four_nodes_s / one_node_s, 2),
        "raw_playbook_s": round(raw_playbook_s, 1),
        "flow_s": round(four_nodes_s, 1),
        "flow_overhead_ratio": round(four_nodes_s / raw_playbook_s, 2),
        "runs_s": {
            "one_node": [round(value, 1) for value in ones],
            "raw_four": [round(value, 1) for value in raws],
            "flow_four": [round(value, 1) for value in fours],
        },
        "strategy": strategy(),
        "changed_per_host": changed,
        "cores": os.cpu_count(),
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
