"""The Molecule loop on real nodes: converge, idempotence, verify; a node down; a failing task.

One scenario keeps the suite lean (every converge costs minutes on a shared 2-core machine):
three nodes, worker-2 stopped before the first run, which must name it unreachable while cp-0
and worker-1 converge; the second run on cp-0 and worker-1 must change nothing.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.configure import configure
from socialnet_ops.adapters.ansible import record_host_keys
from socialnet_ops.adapters.nodes import RUN_ROOT, NodeSet
from socialnet_ops.core.inventory import ConfigurationError
from tests.integration.ansible.conftest import ADMIN, inventory_for
from tests.support.waiting import wait_for

# Converging takes minutes here (image build included on a fresh machine).
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]
LIVE = ["cp-0", "worker-1"]


@pytest.fixture(scope="module")
def converged(
    prefect_server: None, three_nodes: NodeSet, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    inventory = inventory_for(three_nodes, tmp_path_factory.mktemp("converge"))
    three_nodes.stop("worker-2")
    with pytest.raises(ConfigurationError) as first:
        configure("local", inventory_path=inventory, unreachable_retries=1, retry_backoff_seconds=1)
    second = configure("local", inventory_path=inventory, limit=",".join(LIVE))
    return {"first": first.value, "second": second, "inventory": inventory}


def test_a_stopped_node_is_unreachable_by_name_and_the_others_converge(
    converged: dict[str, Any],
) -> None:
    message = str(converged["first"])
    assert "unreachable after 2 attempt(s): worker-2" in message
    assert "configured: cp-0, worker-1" in message
    hosts = converged["first"].hosts
    assert hosts["worker-2"]["status"] == "unreachable"
    assert hosts["worker-2"]["attempts"] == 2


def test_first_run_configures_every_live_node(converged: dict[str, Any]) -> None:
    hosts = converged["first"].hosts
    for host in LIVE:
        recap = hosts[host]
        assert recap["failed"] == 0 and recap["unreachable"] == 0, host
        assert recap["changed"] > 10, host
        assert recap["seconds"] > 0, host


def test_second_run_changes_nothing_on_any_host(converged: dict[str, Any]) -> None:
    hosts = converged["second"].hosts
    assert {host: recap["changed"] for host, recap in hosts.items()} == {"cp-0": 0, "worker-1": 0}
    assert all(recap["failed"] == 0 for recap in hosts.values())
    assert converged["second"].changed == 0


def test_recap_artifact_has_a_row_per_host(converged: dict[str, Any]) -> None:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["ansible-recap-local"]))
        )
    assert artifacts
    data = max(artifacts, key=lambda artifact: artifact.created).data
    rows = json.loads(data) if isinstance(data, str) else data
    assert {row["host"] for row in rows} == set(LIVE)  # the last run: the second, limited one
    assert set(rows[0]) >= {"ok", "changed", "failed", "unreachable", "seconds"}


def sshd_settings(nodes: NodeSet, name: str) -> dict[str, str]:
    output = nodes.exec(name, ["sshd", "-T"]).stdout
    return dict(line.split(" ", 1) for line in output.splitlines() if " " in line)


@pytest.mark.parametrize("name", LIVE)
def test_sshd_refuses_root_and_passwords(
    converged: dict[str, Any], three_nodes: NodeSet, name: str
) -> None:
    settings = sshd_settings(three_nodes, name)
    assert settings["permitrootlogin"] == "no"
    assert settings["passwordauthentication"] == "no"
    assert settings["kbdinteractiveauthentication"] == "no"
    assert settings["pubkeyauthentication"] == "yes"
    assert settings["x11forwarding"] == "no"


def test_administrators_exist_with_their_keys_and_sudo(
    converged: dict[str, Any], three_nodes: NodeSet
) -> None:
    for name in LIVE:
        groups = three_nodes.exec(name, ["id", "-nG", ADMIN]).stdout.split()
        assert "socialnet-admins" in groups
        keys = three_nodes.exec(name, ["cat", f"/home/{ADMIN}/.ssh/authorized_keys"]).stdout
        assert three_nodes.public_key in keys
        three_nodes.exec(name, ["visudo", "-cf", "/etc/sudoers.d/socialnet-admins"])
    # The administrator logs in with the key and becomes root without a password.
    login = subprocess.run(
        [*three_nodes.ssh_command("worker-1", user=ADMIN), "sudo", "-n", "id", "-u"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == "0"
    root = subprocess.run(
        [*three_nodes.ssh_command("worker-1", user="root"), "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert root.returncode != 0


def test_sysctl_files_are_present_and_applied(
    converged: dict[str, Any], three_nodes: NodeSet
) -> None:
    for name in LIVE:
        for path in (
            "/etc/sysctl.d/60-socialnet-hardening.conf",
            "/etc/sysctl.d/70-socialnet-kubernetes.conf",
            "/etc/modules-load.d/socialnet-kubernetes.conf",
        ):
            three_nodes.exec(name, ["test", "-s", path])
        values = three_nodes.exec(
            name, ["sysctl", "-n", "net.ipv4.ip_forward", "net.ipv4.conf.all.accept_redirects"]
        ).stdout.split()
        assert values == ["1", "0"]
        assert three_nodes.exec(name, ["swapon", "--show", "--noheadings"]).stdout == ""
    role = yaml.safe_load(three_nodes.exec("cp-0", ["cat", "/etc/socialnet/node.yml"]).stdout)
    assert role["role"] == "control_plane"
    three_nodes.exec("cp-0", ["test", "-d", "/var/lib/etcd"])
    assert (
        three_nodes.exec("worker-1", ["test", "-d", "/var/lib/etcd"], check=False).returncode != 0
    )


def test_time_sync_and_security_updates_are_set_up(
    converged: dict[str, Any], three_nodes: NodeSet
) -> None:
    for name in LIVE:
        assert (
            three_nodes.exec(name, ["systemctl", "is-enabled", "chrony"]).stdout.strip()
            == "enabled"
        )
        auto = three_nodes.exec(name, ["cat", "/etc/apt/apt.conf.d/20auto-upgrades"]).stdout
        assert 'APT::Periodic::Unattended-Upgrade "1";' in auto


def test_node_exporter_answers_on_its_port(converged: dict[str, Any], three_nodes: NodeSet) -> None:
    for name in LIVE:
        response = httpx.get(f"http://{three_nodes.node(name).address}:9100/metrics", timeout=10)
        assert response.status_code == 200
        assert "node_exporter_build_info" in response.text


def test_a_failing_task_names_host_and_task(
    converged: dict[str, Any], three_nodes: NodeSet, tmp_path: Path
) -> None:
    inventory = Path(converged["inventory"])
    document = yaml.safe_load(inventory.read_text())
    worker = document["all"]["children"]["k8s_nodes"]["children"]["workers"]["hosts"]["worker-1"]
    worker["monitoring_packages"] = ["socialnet-no-such-package"]
    broken = tmp_path / "inventory.yml"
    broken.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigurationError) as error:
        configure("local", inventory_path=str(broken), tags=["monitoring"], limit=",".join(LIVE))
    message = str(error.value)
    assert "worker-1: task 'monitoring : Install the Prometheus node exporter' failed" in message
    assert "socialnet-no-such-package" in message
    assert "configured: cp-0" in message


def test_a_node_answering_with_another_host_key_is_refused_by_name_and_not_retried(
    converged: dict[str, Any], three_nodes: NodeSet, tmp_path: Path
) -> None:
    """Every login checks the host key the launch recorded. Inventories that bring no keys get
    each live host's key recorded on first use, the very key the node has."""
    launch_keys = set(three_nodes.known_hosts.read_text().splitlines())
    document = yaml.safe_load(Path(converged["inventory"]).read_text())
    del document["all"]["vars"]["ansible_ssh_common_args"]
    bare = tmp_path / "bare.yml"
    bare.write_text(yaml.safe_dump(document))
    scanned = tmp_path / "known_hosts"
    assert record_host_keys(bare, scanned, logging.getLogger("test")) == LIVE  # worker-2 is down
    assert set(scanned.read_text().splitlines()) <= launch_keys
    assert record_host_keys(bare, scanned, logging.getLogger("test")) == []  # once only

    address = three_nodes.node("worker-1").address
    three_nodes.exec(
        "worker-1",
        [
            "sh",
            "-c",
            'rm -f /etc/ssh/ssh_host_* && ssh-keygen -A && kill -HUP "$(cat /run/sshd.pid)"',
        ],
    )

    def key_changed() -> bool:
        keys = subprocess.run(
            ["ssh-keyscan", "-T", "3", "-t", "ed25519", address], capture_output=True, text=True
        ).stdout.splitlines()
        return bool(keys) and keys[-1] not in launch_keys

    wait_for(key_changed, 30, "worker-1's new host key", interval_s=0.5)
    # A connection kept open from earlier runs would never meet the new key.
    for socket in RUN_ROOT.glob(f"cp-{three_nodes.launch_token}-*"):
        socket.unlink(missing_ok=True)
    with pytest.raises(ConfigurationError) as error:
        configure(
            "local",
            inventory_path=converged["inventory"],
            tags=["monitoring"],
            limit=",".join(LIVE),
            retry_backoff_seconds=1,
        )
    message = str(error.value)
    assert "worker-1: its SSH host key is not the one recorded" in message
    assert "unreachable after" not in message  # a new attempt would meet the same key
    assert "configured: cp-0" in message
