"""Inventories from Terraform outputs and launched nodes; recaps and run-log lines from events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from socialnet_ops.core.inventory import (
    HostRecap,
    InventoryError,
    InventoryNode,
    build_inventory,
    cloud_connection,
    diff_lines,
    event_line,
    failed_hosts,
    host_seconds,
    inventory_hosts,
    merge_recaps,
    recap_from_stats,
    recap_rows,
    retriable_hosts,
    task_failures,
    terraform_nodes,
    unreachable_hosts,
)
from socialnet_ops.core.paths import repo_root

pytestmark = pytest.mark.unit

CATALOG = "deployments/environments/staging.yaml"
SOURCE = "Prefect Variable infra-staging"


def infra(*nodes: tuple[str, str, str, str]) -> dict[str, Any]:
    return {
        "environment": "staging",
        "nodes": [
            {"name": name, "role": role, "private_ip": private, "public_ip": public}
            for name, role, private, public in nodes
        ],
    }


STAGING = infra(
    ("staging-node-0", "control_plane", "10.0.1.10", "203.0.113.10"),
    ("staging-node-1", "workers", "10.0.2.11", ""),
)


# --- building inventories ----------------------------------------------------------------------


def test_inventory_groups_nodes_under_k8s_nodes_control_plane_first() -> None:
    document = build_inventory(
        [
            InventoryNode("worker-1", "workers", "10.213.1.11"),
            InventoryNode("cp-0", "control_plane", "10.213.1.10", {"extra": 1}),
        ],
        {"ansible_user": "admin"},
    )
    assert document["all"]["vars"] == {"ansible_user": "admin"}
    children = document["all"]["children"]["k8s_nodes"]["children"]
    assert list(children) == ["control_plane", "workers"]
    assert children["control_plane"]["hosts"]["cp-0"] == {"ansible_host": "10.213.1.10", "extra": 1}
    assert inventory_hosts(document) == {"cp-0": "control_plane", "worker-1": "workers"}


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ([], "at least one node"),
        ([InventoryNode("a/b", "workers", "10.0.0.1")], "'a/b': not a usable host name"),
        ([InventoryNode("n", "workers", "")], "'n' has no address"),
        (
            [InventoryNode("n", "workers", "10.0.0.1"), InventoryNode("n", "workers", "10.0.0.2")],
            "'n' appears twice",
        ),
    ],
)
def test_bad_nodes_are_refused_by_name(nodes: list[InventoryNode], message: str) -> None:
    with pytest.raises(InventoryError, match=message):
        build_inventory(nodes)


def test_terraform_nodes_prefer_the_public_address_and_keep_roles() -> None:
    nodes = terraform_nodes(
        STAGING, {"control_plane": 1, "workers": 1}, source=SOURCE, catalog=CATALOG
    )
    assert [(n.name, n.group, n.address) for n in nodes] == [
        ("staging-node-0", "control_plane", "203.0.113.10"),
        ("staging-node-1", "workers", "10.0.2.11"),
    ]
    private = terraform_nodes(
        STAGING,
        {"control_plane": 1, "workers": 1},
        source=SOURCE,
        catalog=CATALOG,
        address="private",
    )
    assert [n.address for n in private] == ["10.0.1.10", "10.0.2.11"]


def test_terraform_nodes_must_match_the_catalog_counts() -> None:
    with pytest.raises(InventoryError) as error:
        terraform_nodes(STAGING, {"control_plane": 1, "workers": 2}, source=SOURCE, catalog=CATALOG)
    assert str(error.value) == (
        "Prefect Variable infra-staging: workers: 1 provisioned, 2 expected "
        "(deployments/environments/staging.yaml ansible.groups); run the provision flow again"
    )


def test_terraform_nodes_name_the_bad_entry() -> None:
    odd = infra(("n0", "etcd", "10.0.0.1", ""))
    with pytest.raises(InventoryError, match=r"nodes\[0\]: role 'etcd' is not a group"):
        terraform_nodes(odd, {"control_plane": 1}, source=SOURCE, catalog=CATALOG)
    with pytest.raises(InventoryError, match="no nodes recorded; run the provision flow"):
        terraform_nodes({"environment": "staging", "nodes": []}, {}, source=SOURCE, catalog=CATALOG)
    public_only = infra(("n0", "control_plane", "10.0.0.1", ""))
    with pytest.raises(InventoryError, match="'n0' has no public address"):
        terraform_nodes(
            public_only, {"control_plane": 1}, source=SOURCE, catalog=CATALOG, address="public"
        )


def test_cloud_connection_uses_the_image_user_and_an_optional_key() -> None:
    assert cloud_connection({}) == {"ansible_user": "admin", "ansible_become": True}
    assert cloud_connection(
        {"SOCIALNET_ANSIBLE_USER": "debian", "SOCIALNET_ANSIBLE_PRIVATE_KEY": "/k"}
    ) == {"ansible_user": "debian", "ansible_become": True, "ansible_ssh_private_key_file": "/k"}


def test_the_example_inventory_has_the_shape_of_built_ones() -> None:
    path = repo_root() / "infrastructure" / "ansible" / "inventories" / "example.yml"
    hosts = inventory_hosts(yaml.safe_load(path.read_text()))
    assert set(hosts.values()) == {"control_plane", "workers"}


# --- recaps and log lines ----------------------------------------------------------------------


def event(kind: str, host: str = "", **data: Any) -> dict[str, Any]:
    body = {"host": host, **data} if host else data
    return {"event": kind, "event_data": body, "stdout": data.pop("stdout", "")}


def test_a_changed_host_key_is_named_and_never_retried() -> None:
    changed = (
        "Failed to connect to the host via ssh: @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
        "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key verification failed."
    )
    by_mitogen = (
        "Host key checking is enabled, and SSH reported an unrecognized or mismatching host key."
    )
    events = [
        event("runner_on_unreachable", "worker-1", res={"msg": changed, "unreachable": True}),
        event("runner_on_unreachable", "worker-2", res={"msg": "Connection timed out"}),
        event("runner_on_unreachable", "worker-3", res={"msg": f"Task failed: {by_mitogen}"}),
    ]
    dark = {"worker-1": 1, "worker-2": 1, "worker-3": 1}
    recaps = recap_from_stats({"dark": dark}, events)
    assert unreachable_hosts(recaps) == ["worker-1", "worker-2", "worker-3"]
    assert retriable_hosts(recaps) == ["worker-2"]  # a new attempt meets the same key
    assert "host key is not the one recorded" in recaps["worker-1"].reason
    assert recaps["worker-2"].reason == ""


def test_recap_comes_from_stats_with_time_from_events() -> None:
    stats = {
        "ok": {"cp-0": 20, "worker-1": 3},
        "changed": {"cp-0": 12},
        "failures": {"worker-1": 1},
        "dark": {"worker-2": 1},
        "skipped": {"cp-0": 2},
    }
    events = [
        event("runner_on_ok", "cp-0", start="2025-01-01T10:00:00", end="2025-01-01T10:00:02"),
        event("runner_on_ok", "cp-0", start="2025-01-01T10:00:30", end="2025-01-01T10:00:41.5"),
        event("playbook_on_task_start", task="x"),
    ]
    recaps = recap_from_stats(stats, events)
    assert list(recaps) == ["cp-0", "worker-1", "worker-2"]
    assert recaps["cp-0"] == HostRecap("cp-0", ok=20, changed=12, skipped=2, seconds=41.5)
    assert [r.status for r in recaps.values()] == ["changed", "failed", "unreachable"]
    assert unreachable_hosts(recaps) == ["worker-2"]
    assert failed_hosts(recaps) == ["worker-1"]
    row = recap_rows(recaps)[0]
    assert row == {
        "host": "cp-0",
        "status": "changed",
        "ok": 20,
        "changed": 12,
        "failed": 0,
        "unreachable": 0,
        "skipped": 2,
        "seconds": 41.5,
        "attempts": 1,
    }


def test_a_retry_replaces_the_hosts_result_and_counts_attempts() -> None:
    first = {
        "cp-0": HostRecap("cp-0", ok=20, changed=10, seconds=30),
        "worker-1": HostRecap("worker-1", unreachable=1, seconds=1),
    }
    retry = {"worker-1": HostRecap("worker-1", ok=20, changed=10, seconds=29)}
    merged = merge_recaps(first, retry)
    assert merged["worker-1"].attempts == 2
    assert merged["worker-1"].seconds == 30
    assert merged["worker-1"].status == "changed"
    assert merged["cp-0"].attempts == 1


def test_failures_name_host_task_and_message_and_skip_ignored_ones() -> None:
    events = [
        event(
            "runner_on_failed",
            "worker-1",
            task="Install the Prometheus node exporter",
            role="monitoring",
            res={"msg": "No package matching 'nope' is available"},
        ),
        event("runner_on_failed", "cp-0", task="Probe", ignore_errors=True, res={"msg": "x"}),
        event(
            "runner_on_failed",
            "cp-0",
            task="Create the administrators",
            res={"results": [{"failed": False}, {"failed": True, "msg": "bad shell"}]},
        ),
    ]
    failures = task_failures(events)
    assert [f.describe() for f in failures] == [
        "worker-1: task 'monitoring : Install the Prometheus node exporter' failed: "
        "No package matching 'nope' is available",
        "cp-0: task 'Create the administrators' failed: bad shell",
    ]


def test_event_lines_read_like_awx_output() -> None:
    assert event_line(event("playbook_on_play_start", play="Prepare nodes")) == (
        "PLAY [Prepare nodes]"
    )
    assert event_line(event("playbook_on_task_start", task="x")) is None
    changed = event(
        "runner_on_ok",
        "cp-0",
        task="Configure chrony",
        role="common",
        duration=1.234,
        res={"changed": True},
    )
    assert event_line(changed) == "changed: [cp-0] common : Configure chrony (1.2 s)"
    assert event_line(event("runner_on_ok", "cp-0", task="t", res={"changed": False})) == (
        "ok: [cp-0] t"
    )
    unreachable = event(
        "runner_on_unreachable",
        "worker-2",
        task="Gathering Facts",
        res={"msg": "Failed to connect to the host via ssh: Connection refused"},
    )
    assert event_line(unreachable) == (
        "unreachable: [worker-2] Gathering Facts: Failed to connect to the host via ssh: "
        "Connection refused"
    )
    ignored = event("runner_on_failed", "cp-0", task="t", ignore_errors=True, res={"msg": "m"})
    assert event_line(ignored) == "failed (ignored): [cp-0] t: m"
    assert event_line(event("verbose")) is None


def test_diff_lines_come_from_file_diff_events() -> None:
    stdout = "--- before: /etc/x\n+++ after: /etc/x\n@@ -1 +1 @@\n-a\n+b\n\n"
    assert diff_lines(event("runner_on_file_diff", "cp-0", stdout=stdout)) == [
        "--- before: /etc/x",
        "+++ after: /etc/x",
        "@@ -1 +1 @@",
        "-a",
        "+b",
    ]
    assert diff_lines(event("runner_on_ok", "cp-0", res={"diff": {}}, stdout=stdout)) == []


def test_host_seconds_ignores_events_without_times() -> None:
    assert host_seconds([event("runner_on_ok", "cp-0")]) == {"cp-0": 0.0}


def test_every_role_has_the_galaxy_layout() -> None:
    roles = repo_root() / "infrastructure" / "ansible" / "roles"
    for role in ("common", "hardening", "k8s_node", "monitoring"):
        for part in ("defaults", "tasks", "handlers", "meta", "vars"):
            assert (roles / role / part / "main.yml").is_file(), f"{role}/{part}/main.yml"
        assert any((roles / role / "templates").glob("*.j2")), f"{role} has no template"
        for template in (roles / role / "templates").glob("*.j2"):
            assert "ansible_managed" in template.read_text(), template


def test_role_package_lists_feed_the_node_image(tmp_path: Path) -> None:
    from socialnet_ops.adapters.nodes import role_packages

    packages = role_packages()
    assert {"chrony", "prometheus-node-exporter", "unattended-upgrades", "conntrack"} <= set(
        packages
    )
    (tmp_path / "r" / "defaults").mkdir(parents=True)
    (tmp_path / "r" / "defaults" / "main.yml").write_text(
        "r_packages: [b, a]\nr_port: 1\nr_names_packages: x\n"
    )
    assert role_packages(tmp_path) == ["a", "b"]
