"""A dry run on a fresh node: changes reported, nothing changed."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.configure import configure
from socialnet_ops.adapters.nodes import NodeSet, running_nodes
from tests.integration.ansible.conftest import ADMIN, inventory_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture
def fresh_node(node_image: Path) -> Iterator[NodeSet]:
    with running_nodes({"control_plane": 1}) as nodes:
        yield nodes


def test_check_mode_reports_changes_and_changes_nothing(
    prefect_server: None, fresh_node: NodeSet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    def snapshot() -> str:
        return fresh_node.exec(
            "cp-0",
            [
                "sh",
                "-c",
                "md5sum /etc/ssh/sshd_config; ls /etc/sysctl.d; dpkg -l | md5sum; getent passwd | md5sum",
            ],
        ).stdout

    before = snapshot()
    result = configure("local", check=True, inventory_path=inventory_for(fresh_node, tmp_path))
    assert result.check is True
    assert result.hosts["cp-0"]["changed"] > 0  # what a converge would change
    assert snapshot() == before
    # The dry run shows its diffs in the run log, e.g. sshd_config before and after.
    assert "+++ after" in caplog.text
    assert fresh_node.exec("cp-0", ["getent", "passwd", ADMIN], check=False).returncode != 0
    assert (
        fresh_node.exec("cp-0", ["dpkg", "-s", "prometheus-node-exporter"], check=False).returncode
        != 0
    )
