"""Real Debian nodes (systemd-nspawn, own network namespaces, SSH) configured by the real flow.

The base image is built once per machine (~1-3 min, cached under /var/cache/socialnet-nodes);
each node then starts from it in about a second and is always torn down, also when a test fails.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from socialnet_ops.adapters.nodes import NodeSet, ensure_image, requirements_problem, running_nodes
from tests.support.requirements import unavailable

# Ansible logs in as the image's bootstrap user; `common` adds this administrator with the same key.
ADMIN = "ops"


def require_nodes() -> None:
    """Root, mmdebstrap, systemd-nspawn; in CI their absence is a broken runner, never a skip."""
    problem = requirements_problem()
    if problem:
        unavailable(problem)


@pytest.fixture(scope="session")
def node_image() -> Path:
    require_nodes()
    return ensure_image()


def admin_variables(nodes: NodeSet) -> dict[str, Any]:
    return {"common_admin_users": [{"name": ADMIN, "ssh_keys": [nodes.public_key]}]}


@pytest.fixture(scope="module")
def three_nodes(node_image: Path) -> Iterator[NodeSet]:
    """A control plane node and two workers."""
    with running_nodes({"control_plane": 1, "workers": 2}) as nodes:
        yield nodes


def inventory_for(
    nodes: NodeSet, folder: Path, prefect_workers: Sequence[str] = (), **extra: Any
) -> str:
    """`prefect_workers`: nodes the configure flow gives a Prefect worker of this run's server."""
    variables = {**admin_variables(nodes), **extra}
    path = nodes.write_inventory(folder / "inventory.yml", variables, prefect_workers)
    return str(path)
