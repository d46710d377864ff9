"""A Prefect worker on another machine: a node configured by the real configure flow runs flows.

A real Prefect server with basic auth listens on 127.0.0.1 only, as the control plane's does; a
node (systemd-nspawn, its own network namespace) reaches it through the launcher's relay on its
bridge. The configure flow installs the `prefect_worker` role there; a run of the pool's `node`
queue then executes on the node (it says so from inside), one of `default` on this machine's
worker. The credential is the worker user's 0600 file and in no log, event, unit or command line.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.logging.handlers import APILogHandler
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings
from prefect.utilities.processutils import command_to_string
from prefect.workers.process import ProcessWorker

from flows.configure import configure
from socialnet_ops.adapters.ansible import AUTH_FILE_SETTING
from socialnet_ops.adapters.nodes import NodeSet, ensure_relay, launch, running_nodes
from socialnet_ops.control.worker import engine_command
from socialnet_ops.core.inventory import NODE_WORK_QUEUE, WORK_POOL
from socialnet_ops.core.paths import repo_root
from socialnet_ops.core.results import ConfigureResult
from tests.integration.ansible.conftest import inventory_for
from tests.support.prefect import environment_variable
from tests.support.processes import running_process
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

NODE = "worker-0"
WORKER_USER = "prefect-worker"
SERVICE = "socialnet-prefect-worker"
PROBE_FLOW = "node-worker-probe"
ENTRYPOINT = "tests/integration/ansible/test_prefect_worker.py:where_am_i"
SERVER_START_S = 120
RUN_DONE_S = 300


@flow(name=PROBE_FLOW)
def where_am_i() -> None:
    """Say, from inside the run, on which machine and as whom it runs (read back as an artifact)."""
    host = socket.gethostname()
    create_markdown_artifact(
        key="node-worker-probe",
        markdown=json.dumps(
            {
                "hostname": host,
                "address": socket.gethostbyname(host),
                "user": pwd.getpwuid(os.getuid()).pw_name,
            }
        ),
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def without_prefect_settings() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}


@dataclass(frozen=True)
class Server:
    url: str
    auth: str
    folder: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A Prefect server with basic auth on 127.0.0.1 only (SQLite), as the control plane's API."""
    folder = tmp_path_factory.mktemp("prefect-auth")
    port = free_port()
    auth = f"socialnet:{secrets.token_urlsafe(18)}"
    env = {
        **without_prefect_settings(),
        "PREFECT_HOME": str(folder / "home"),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{folder}/prefect.db",
        "PREFECT_SERVER_API_AUTH_STRING": auth,
    }
    command = [
        *[sys.executable, "-m", "prefect", "server", "start"],
        *["--host", "127.0.0.1", "--port", str(port)],
        *["--no-ui", "--analytics-off", "--no-scheduler", "--no-late-runs"],
    ]
    log = folder / "server.log"
    with running_process(command, env, log, cwd=folder):
        url = f"http://127.0.0.1:{port}/api"

        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, SERVER_START_S, f"the Prefect server (log: {log})", interval_s=0.5)
        yield Server(url, auth, folder)


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[SyncPrefectClient]:
    """This process's Prefect settings point at the server (the configure flow runs here too)."""
    updates = {PREFECT_API_URL: server.url, PREFECT_API_AUTH_STRING: server.auth}
    with temporary_settings(updates=updates), get_client(sync_client=True) as client:
        yield client


@pytest.fixture(scope="module")
def pool(client: SyncPrefectClient) -> str:
    """The control plane's process pool, the probe deployed to its `node` and `default` queues."""
    template = ProcessWorker.get_default_base_job_template()
    variables = template["variables"]["properties"]
    variables["command"]["default"] = command_to_string(engine_command())
    variables["working_dir"]["default"] = str(repo_root())
    client.create_work_pool(
        WorkPoolCreate(name=WORK_POOL, type="process", base_job_template=template)
    )
    client.create_work_queue(name=NODE_WORK_QUEUE, work_pool_name=WORK_POOL)
    flow_id = client.create_flow_from_name(PROBE_FLOW)
    for queue in (NODE_WORK_QUEUE, "default"):
        client.create_deployment(
            flow_id=flow_id,
            name=queue,
            work_pool_name=WORK_POOL,
            work_queue_name=queue,
            entrypoint=ENTRYPOINT,
            path=str(repo_root()),
            pull_steps=[
                {"prefect.deployments.steps.set_working_directory": {"directory": str(repo_root())}}
            ],
        )
    return WORK_POOL


@pytest.fixture(scope="module")
def node(node_image: Path) -> Iterator[NodeSet]:
    with running_nodes({"workers": 1}) as nodes:
        yield nodes


@dataclass(frozen=True)
class Configured:
    dry_run: ConfigureResult
    first: ConfigureResult
    second: ConfigureResult
    user_after_dry_run: bool


@pytest.fixture(scope="module")
def configured(
    server: Server,
    client: SyncPrefectClient,
    pool: str,
    node: NodeSet,
    tmp_path_factory: pytest.TempPathFactory,
) -> Configured:
    """The configure flow, twice, as the control plane runs it: its credential in its environment
    and in the 0600 file SOCIALNET_PREFECT_AUTH_FILE names."""
    folder = tmp_path_factory.mktemp("configure-worker")
    auth_file = folder / "prefect-auth"
    auth_file.write_text(server.auth + "\n")
    auth_file.chmod(0o600)
    inventory = inventory_for(node, folder, prefect_workers=[NODE])
    with (
        environment_variable(AUTH_FILE_SETTING, str(auth_file)),
        environment_variable("PREFECT_API_AUTH_STRING", server.auth),
    ):
        dry_run = configure("local", inventory_path=inventory, check=True)
        user_after_dry_run = node.exec(NODE, ["id", WORKER_USER], check=False).returncode == 0
        first = configure("local", inventory_path=inventory)
        second = configure("local", inventory_path=inventory)
    return Configured(dry_run, first, second, user_after_dry_run)


def run_probe(client: SyncPrefectClient, queue: str, node: NodeSet | None = None) -> dict[str, Any]:
    deployment = client.read_deployment_by_name(f"{PROBE_FLOW}/{queue}")
    run = client.create_flow_run_from_deployment(deployment.id)

    def final() -> FlowRun | None:
        current = client.read_flow_run(run.id)
        return current if current.state and current.state.is_final() else None

    try:
        finished = wait_for(final, RUN_DONE_S, f"the {queue} queue's run reaching a final state", 1)
    except AssertionError as error:
        if node is None:
            raise
        journal = node.exec(NODE, ["journalctl", "-u", SERVICE, "--no-pager", "-n", "15"])
        raise AssertionError(f"{error}; the node worker's journal:\n{journal.stdout}") from None
    assert finished.state and finished.state.is_completed(), finished.state
    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
    )
    assert artifacts, f"the {queue} run left no report"
    report: dict[str, Any] = json.loads(str(artifacts[0].data))
    return report


def test_a_run_of_the_node_queue_runs_on_the_node(
    configured: Configured, client: SyncPrefectClient, node: NodeSet
) -> None:
    seen = run_probe(client, NODE_WORK_QUEUE, node)
    assert seen["hostname"] == NODE != socket.gethostname()
    assert seen["address"] == node.node(NODE).address
    assert seen["user"] == WORKER_USER


def test_the_pool_has_a_worker_here_and_one_on_the_node(
    configured: Configured,
    server: Server,
    client: SyncPrefectClient,
    pool: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    log = tmp_path_factory.mktemp("host-worker") / "worker.log"
    env = {
        **without_prefect_settings(),
        "PREFECT_API_URL": server.url,
        "PREFECT_API_AUTH_STRING": server.auth,
        "PREFECT_WORKER_QUERY_SECONDS": "2",
    }
    command = [
        *[sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"],
        *["--work-queue", "default", "--name", "host", "--install-policy", "never"],
    ]
    with running_process(command, env, log, cwd=repo_root()):
        seen = run_probe(client, "default")
        workers = {worker.name for worker in client.read_workers_for_work_pool(pool)}
    assert seen["hostname"] == socket.gethostname() != NODE
    assert {"host", f"node-{NODE}"} <= workers, workers


def test_the_credential_is_the_worker_users_alone(configured: Configured, node: NodeSet) -> None:
    auth_path = "/etc/socialnet-prefect-worker/api-auth"
    mode = node.exec(NODE, ["stat", "-c", "%a %U %G", auth_path]).stdout.split()
    assert mode == ["600", WORKER_USER, WORKER_USER]
    folder = node.exec(NODE, ["stat", "-c", "%a %U %G", "/etc/socialnet-prefect-worker"])
    assert folder.stdout.split() == ["750", "root", WORKER_USER]
    unit = node.exec(NODE, ["systemctl", "show", SERVICE, "-p", "User,Restart,ActiveState"])
    assert set(unit.stdout.split()) == {
        f"User={WORKER_USER}",
        "Restart=on-failure",
        "ActiveState=active",
    }


def run_log(client: SyncPrefectClient, flow_run_id: str) -> str:
    """A run's log as the server holds it, once its Ansible events have arrived."""
    APILogHandler().flush()
    run_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(flow_run_id)]))

    def stored() -> str | None:
        lines: list[str] = []
        while page := client.read_logs(log_filter=run_filter, limit=200, offset=len(lines)):
            lines += [entry.message for entry in page]
        text = "\n".join(lines)
        return text if "recap: " in text else None

    return str(wait_for(stored, 30, f"the log of run {flow_run_id}", interval_s=0.5))


def test_the_credential_is_in_no_log_event_unit_or_command_line(
    configured: Configured, server: Server, client: SyncPrefectClient, node: NodeSet
) -> None:
    password = server.auth.split(":", 1)[1]
    for result in (configured.dry_run, configured.first, configured.second):
        text = run_log(client, result.flow_run_id)
        assert "prefect_worker : Install the API credential" in text, "no Ansible events logged"
        assert password not in text
        run = client.read_flow_run(uuid.UUID(result.flow_run_id))
        assert password not in json.dumps(run.parameters)
    processes = node.exec(NODE, ["ps", "-eo", "user:20,args"]).stdout
    assert any(
        line.startswith(WORKER_USER) and "prefect worker start" in line
        for line in processes.splitlines()
    ), processes
    assert password not in processes
    files = [
        "/etc/systemd/system/socialnet-prefect-worker.service",
        "/etc/socialnet-prefect-worker/worker.env",
        "/usr/local/sbin/socialnet-prefect-worker",
    ]
    for path in files:
        assert password not in node.exec(NODE, ["cat", path]).stdout, path
    journal = node.exec(NODE, ["journalctl", "--no-pager", "-u", SERVICE], check=False)
    assert password not in journal.stdout


def test_a_dry_run_on_a_fresh_node_fails_nothing_and_installs_nothing(
    configured: Configured, client: SyncPrefectClient
) -> None:
    assert configured.dry_run.hosts[NODE]["failed"] == 0
    assert configured.dry_run.hosts[NODE]["changed"] > 0
    text = run_log(client, configured.dry_run.flow_run_id)
    assert "changed: [worker-0] prefect_worker : Create the worker's user" in text
    assert not configured.user_after_dry_run, "the dry run created the worker's user"


def test_a_second_configure_changes_nothing(configured: Configured) -> None:
    assert configured.first.hosts[NODE]["changed"] > 0
    assert configured.second.hosts[NODE]["changed"] == 0
    assert configured.second.hosts[NODE]["failed"] == 0


def test_the_relay_is_kept_when_asked_again_and_stopped_with_its_nodes(node_image: Path) -> None:
    with socket.socket() as backend:
        backend.bind(("127.0.0.1", 0))
        backend.listen()
        port = backend.getsockname()[1]
        nodes = launch({})
        try:
            relay = ensure_relay(nodes.slot, port)
            pid_file = nodes.state / "relays" / f"{port}.pid"
            pid = int(pid_file.read_text().split()[0])
            assert ensure_relay(nodes.slot, port) == relay == f"10.213.{nodes.slot}.1:{port}"
            assert int(pid_file.read_text().split()[0]) == pid, "a running relay was replaced"
            host, relay_port = relay.split(":")
            with socket.create_connection((host, int(relay_port)), timeout=5):
                backend.settimeout(5)
                backend.accept()[0].close()
        finally:
            nodes.close()
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, f"the relay {pid} stopping")
    command = subprocess.run(["ss", "-ltn"], capture_output=True, text=True, check=False).stdout
    assert f"10.213.{nodes.slot}.1:{port}" not in command
