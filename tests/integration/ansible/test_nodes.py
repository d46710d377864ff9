"""The node launcher: nodes are isolated and reachable, and a crashed launch is cleaned up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from socialnet_ops.adapters import nodes
from socialnet_ops.adapters.process import pid_alive

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

LAUNCH_AND_HANG = """
import sys, time
from socialnet_ops.adapters.nodes import launch
launched = launch({"control_plane": 1})
print(launched.slot, launched.node("cp-0").pid, flush=True)
time.sleep(600)
"""


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def test_a_crashed_launch_is_cleaned_up_by_the_next(node_image: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCH_AND_HANG],
        stdout=subprocess.PIPE,
        text=True,
        cwd=nodes.repo_root(),
    )
    assert process.stdout is not None
    slot_text, pid_text = process.stdout.readline().split()
    slot, nspawn = int(slot_text), int(pid_text)
    assert f"sn{slot}-0" in namespaces()
    process.send_signal(signal.SIGKILL)  # the launcher dies without tearing anything down
    process.wait()
    assert os.path.ismount(nodes.RUN_ROOT / str(slot) / "nodes" / "cp-0" / "root")

    assert slot in nodes.clean_stale()

    assert not (nodes.RUN_ROOT / str(slot)).exists()
    assert f"sn{slot}-0" not in namespaces()
    assert nodes.bridge_name(slot) + ":" not in links()
    assert str(nodes.RUN_ROOT / str(slot)) not in Path("/proc/mounts").read_text()
    deadline = time.monotonic() + 10
    while pid_alive(nspawn) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(nspawn)


def test_nodes_reach_each_other_and_the_host_but_have_no_way_out(node_image: Path) -> None:
    with nodes.running_nodes({"control_plane": 1, "workers": 1}) as launched:
        worker = launched.node("worker-1").address
        ping = launched.exec(
            "cp-0", ["bash", "-c", f"exec 3<>/dev/tcp/{worker}/22 && head -c 4 <&3"]
        )
        assert ping.stdout == "SSH-"
        routes = launched.exec("cp-0", ["ip", "route"]).stdout
        assert "default" not in routes
        assert launched.exec("cp-0", ["cat", "/etc/hostname"]).stdout.strip() == "cp-0"
