"""Prefect workers on nodes: their inventory group, the API URL they reach, the launcher's mounts
and relay configuration, and the settings the configure flow hands the role."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import yaml

from socialnet_ops.adapters.ansible import (
    AUTH_FILE_SETTING,
    HIDDEN_FROM_ANSIBLE,
    ansible_environ,
    prefect_worker_sources,
)
from socialnet_ops.adapters.nodes import masked_paths, outermost, project_mounts, relay_config
from socialnet_ops.core.inventory import (
    PREFECT_WORKER_GROUP,
    RELAY_SLOT_VARIABLE,
    InventoryError,
    InventoryNode,
    api_endpoint,
    build_inventory,
    event_line,
    group_hosts,
    group_variables,
    inventory_hosts,
    prefect_worker_group,
    relayed_url,
)

pytestmark = pytest.mark.unit

LOG = logging.getLogger("test")
NODES = [
    InventoryNode("cp-0", "control_plane", "10.213.4.10"),
    InventoryNode("worker-1", "workers", "10.213.4.11"),
]


def test_the_prefect_workers_group_sits_beside_the_kubernetes_nodes() -> None:
    document = build_inventory(
        NODES, {}, {PREFECT_WORKER_GROUP: prefect_worker_group(["worker-1"], 4)}
    )
    assert list(document["all"]["children"]) == ["k8s_nodes", PREFECT_WORKER_GROUP]
    assert group_hosts(document, PREFECT_WORKER_GROUP) == ["worker-1"]
    assert group_variables(document, PREFECT_WORKER_GROUP) == {RELAY_SLOT_VARIABLE: 4}
    # The node's group is still its Kubernetes group.
    assert inventory_hosts(document) == {"cp-0": "control_plane", "worker-1": "workers"}
    assert group_hosts(build_inventory(NODES), PREFECT_WORKER_GROUP) == []


def test_an_extra_group_names_known_nodes_and_no_existing_group() -> None:
    with pytest.raises(InventoryError, match="no node 'worker-9'"):
        build_inventory(NODES, {}, {PREFECT_WORKER_GROUP: prefect_worker_group(["worker-9"], 4)})
    with pytest.raises(InventoryError, match="'workers': already a group"):
        build_inventory(NODES, {}, {"workers": {"hosts": {}}})


def test_the_api_url_is_rewritten_to_the_relay_path_kept() -> None:
    assert api_endpoint("http://127.0.0.1:4200/api") == ("127.0.0.1", 4200)
    assert api_endpoint("https://prefect.example/api") == ("prefect.example", 443)
    assert (
        relayed_url("http://127.0.0.1:4200/api", "10.213.4.1:4200") == "http://10.213.4.1:4200/api"
    )
    with pytest.raises(InventoryError, match="PREFECT_API_AUTH_STRING"):
        api_endpoint("http://user:secret@127.0.0.1:4200/api")
    with pytest.raises(InventoryError, match="expected http"):
        relayed_url("127.0.0.1:4200", "10.213.4.1:4200")


def test_a_no_log_result_is_not_called_unchanged() -> None:
    event = {
        "event": "runner_on_ok",
        "event_data": {"host": "worker-1", "task": "Copy", "res": {"censored": "hidden"}},
    }
    assert event_line(event) == "done (no_log): [worker-1] Copy"


def test_nodes_mount_the_project_and_its_python_never_the_systems(tmp_path: Path) -> None:
    assert outermost([Path("/a/b"), Path("/a"), Path("/c"), Path("/a")]) == [Path("/a"), Path("/c")]
    project = tmp_path / "repo"
    venv = project / ".venv"
    mounts = project_mounts(project, (str(venv), "/opt/python/3.11"))
    assert mounts == [Path("/opt/python/3.11"), project]
    assert project_mounts(project, ("/usr", "/usr/local")) == [project]


def test_the_projects_state_folder_is_hidden_on_nodes(tmp_path: Path) -> None:
    (tmp_path / ".local").mkdir()
    assert masked_paths(tmp_path) == [tmp_path / ".local"]
    assert masked_paths(tmp_path / "elsewhere") == []


def test_the_relay_listens_on_the_bridge_and_forwards_to_loopback() -> None:
    config = relay_config("10.213.4.1", 4200)
    assert "bind 10.213.4.1:4200" in config
    assert "server api 127.0.0.1:4200" in config
    assert "mode tcp" in config and "maxconn" in config


def write_hosts(folder: Path, **groups: dict[str, object]) -> list[str]:
    hosts = folder / "inventory.yml"
    hosts.write_text(yaml.safe_dump(build_inventory(NODES, {}, groups)))
    return [str(hosts)]


def test_an_inventory_without_node_workers_is_left_alone(tmp_path: Path) -> None:
    sources = write_hosts(tmp_path)
    assert prefect_worker_sources(sources, None, True, log=LOG, environ={}) == sources


def test_node_workers_get_the_api_they_reach_and_the_credentials_path(tmp_path: Path) -> None:
    auth = tmp_path / "auth"
    auth.write_text("socialnet:secret\n")
    sources = write_hosts(tmp_path, prefect_workers=prefect_worker_group(["worker-1"], 4))
    extended = prefect_worker_sources(
        sources,
        "https://prefect.example/api",
        True,
        log=LOG,
        environ={AUTH_FILE_SETTING: str(auth)},
    )
    assert extended[:-1] == sources
    settings = yaml.safe_load(Path(extended[-1]).read_text())
    variables = settings["all"]["children"][PREFECT_WORKER_GROUP]["vars"]
    assert variables["prefect_worker_api_url"] == "https://prefect.example/api"
    assert variables["prefect_worker_auth_file"] == str(auth)
    assert variables["prefect_worker_python"] == sys.executable
    assert (variables["prefect_worker_pool"], variables["prefect_worker_queue"]) == (
        "socialnet",
        "node",
    )
    assert "secret" not in Path(extended[-1]).read_text()


def test_node_workers_are_refused_what_they_could_not_use(tmp_path: Path) -> None:
    group = {"hosts": {"worker-1": {}}}
    sources = write_hosts(tmp_path, prefect_workers=group)
    url = "http://127.0.0.1:4200/api"
    with pytest.raises(InventoryError, match="no Prefect API server"):
        prefect_worker_sources(sources, None, False, log=LOG, environ={})
    with pytest.raises(InventoryError, match=f"{AUTH_FILE_SETTING} names no file"):
        prefect_worker_sources(sources, url, True, log=LOG, environ={})
    with pytest.raises(InventoryError, match="does not exist"):
        missing = {AUTH_FILE_SETTING: str(tmp_path / "missing")}
        prefect_worker_sources(sources, url, True, log=LOG, environ=missing)
    with pytest.raises(InventoryError, match=f"sets no {RELAY_SLOT_VARIABLE}"):
        prefect_worker_sources(sources, url, False, log=LOG, environ={})


def test_ansible_never_gets_the_flows_prefect_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "socialnet:secret")
    environ = ansible_environ()
    assert all(environ[name] == "" for name in HIDDEN_FROM_ANSIBLE)
