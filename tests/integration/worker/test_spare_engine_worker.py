"""The control plane's worker (`python -m socialnet_ops.control.worker`) against a real Prefect server: runs
start in a spare engine process started before them, with the environment, directory and settings
Prefect's own starter would give them; cancellation, crashes and worker stops behave as Prefect's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelling
from prefect.workers.process import ProcessWorker

from socialnet_ops.control.control_plane import pool_job_template
from socialnet_ops.core.paths import repo_root
from tests.support.processes import (
    command_line,
    descendants,
    is_running,
    not_running,
    running_process,
)
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FLOWS = "tests/integration/worker/probe_flows.py"
SPARE = "socialnet_ops.control.prestarted_engine"


@pytest.fixture(scope="module")
def client(prefect_server: None) -> Iterator[SyncPrefectClient]:
    with get_client(sync_client=True) as client:
        yield client


def create_pool(client: SyncPrefectClient, template: dict[str, Any] | None = None) -> str:
    """A process pool with the probe deployments (default: the control plane's job template)."""
    name = f"spare-{uuid.uuid4().hex[:8]}"
    client.create_work_pool(
        WorkPoolCreate(name=name, type="process", base_job_template=template or pool_job_template())
    )
    for flow_name, function in (("worker-probe", "report"), ("worker-probe-crash", "crash")):
        client.create_deployment(
            flow_id=client.create_flow_from_name(flow_name),
            name=name,
            work_pool_name=name,
            entrypoint=f"{FLOWS}:{function}",
            path=str(repo_root()),
            pull_steps=[
                {"prefect.deployments.steps.set_working_directory": {"directory": str(repo_root())}}
            ],
        )
    return name


@pytest.fixture(scope="module")
def pool(client: SyncPrefectClient) -> str:
    return create_pool(client)


def spares_of(worker: subprocess.Popen[bytes]) -> list[int]:
    return [pid for pid in descendants(worker.pid) if SPARE in " ".join(command_line(pid))]


@contextmanager
def running_worker(pool: str, log: Path, **environment: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")},
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        **environment,
    }
    command = [sys.executable, "-m", "socialnet_ops.control.worker", "--pool", pool, "--limit", "4"]
    with running_process(command, env, log, cwd=repo_root(), stop_timeout_s=30) as worker:
        yield worker


@pytest.fixture(scope="module")
def worker(
    pool: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with running_worker(pool, log) as worker:
        wait_for(lambda: spares_of(worker), 60, f"the worker's spare engine (log: {log})")
        yield worker


def start_run(
    client: SyncPrefectClient,
    pool: str,
    flow_name: str,
    parameters: dict[str, Any],
    job_variables: dict[str, Any] | None = None,
) -> FlowRun:
    deployment = client.read_deployment_by_name(f"{flow_name}/{pool}")
    return client.create_flow_run_from_deployment(
        deployment.id, parameters=parameters, job_variables=job_variables or {}
    )


def wait_final(client: SyncPrefectClient, run: FlowRun, timeout: float = 90) -> FlowRun:
    def final() -> FlowRun | None:
        current = client.read_flow_run(run.id)
        return current if current.state and current.state.is_final() else None

    return wait_for(final, timeout, f"flow run {run.id} reaching a final state")


def probe(
    client: SyncPrefectClient,
    pool: str,
    tmp_path: Path,
    job_variables: dict[str, Any] | None = None,
) -> tuple[FlowRun, dict[str, Any]]:
    report = tmp_path / f"report-{uuid.uuid4().hex[:6]}.json"
    run = start_run(client, pool, "worker-probe", {"report_file": str(report)}, job_variables)
    finished = wait_final(client, run)
    assert finished.state and finished.state.is_completed(), finished.state
    return finished, json.loads(report.read_text())


def test_a_run_starts_in_the_waiting_spare_with_its_own_environment_and_settings(
    client: SyncPrefectClient, pool: str, worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    waiting = spares_of(worker)
    run, seen = probe(
        client,
        pool,
        tmp_path,
        {"env": {"SOCIALNET_PROBE": "from-the-job", "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "45"}},
    )
    assert seen["pid"] in waiting, "the run did not start in the spare that was waiting"
    assert SPARE in " ".join(seen["command"])
    assert run.created and seen["started_at"] < run.created.timestamp()
    assert seen["flow_run_id"] == seen["environment_flow_run_id"] == str(run.id)
    assert seen["probe"] == "from-the-job"
    assert seen["heartbeat_frequency"] == 45, "the run's settings were not read from its own env"
    assert seen["cwd"] == str(repo_root()) and seen["cwd_on_path"]
    # The spare taken is replaced, so the next run finds one waiting.
    wait_for(lambda: [pid for pid in spares_of(worker) if pid != seen["pid"]], 60, "a new spare")


def test_each_run_has_a_process_of_its_own(
    client: SyncPrefectClient, pool: str, worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    first = probe(client, pool, tmp_path)[1]
    second = probe(client, pool, tmp_path)[1]
    assert first["pid"] != second["pid"]
    # Its process exits once the run is final (a moment later on a loaded machine).
    wait_for(lambda: not is_running(first["pid"]), 15, "a finished run's process exiting")


def test_cancelling_a_run_ends_its_process(
    client: SyncPrefectClient, pool: str, worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    report = tmp_path / "held.json"
    run = start_run(client, pool, "worker-probe", {"report_file": str(report), "hold_s": 120})
    wait_for(report.exists, 60, "the held run's report")
    pid = json.loads(report.read_text())["pid"]
    client.set_flow_run_state(run.id, Cancelling(), force=True)
    finished = wait_final(client, run, timeout=60)
    assert finished.state and finished.state.is_cancelled(), finished.state
    wait_for(partial(not_running, pid), 20, f"the cancelled run's process {pid} ending")


def test_a_run_whose_process_dies_is_crashed_with_its_exit_code(
    client: SyncPrefectClient, pool: str, worker: subprocess.Popen[bytes]
) -> None:
    run = start_run(client, pool, "worker-probe-crash", {"exit_code": 7})
    finished = wait_final(client, run)
    assert finished.state and finished.state.is_crashed(), finished.state
    assert "7" in (finished.state.message or ""), finished.state.message


def test_a_deployment_with_its_own_command_starts_as_prefect_starts_it(
    client: SyncPrefectClient, pool: str, worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    command = f"{sys.executable} -X utf8 -m prefect.engine"
    seen = probe(client, pool, tmp_path, {"command": command})[1]
    assert seen["command"][1:] == ["-X", "utf8", "-m", "prefect.engine"]
    assert seen["cwd"] == str(repo_root()) and seen["cwd_on_path"]


def test_a_pool_without_a_command_keeps_prefect_s_workspace_start(
    client: SyncPrefectClient, tmp_path: Path
) -> None:
    own_pool = create_pool(client, ProcessWorker.get_default_base_job_template())
    with running_worker(own_pool, tmp_path / "worker.log") as worker:
        seen = probe(client, own_pool, tmp_path)[1]
        assert SPARE not in " ".join(seen["command"])
        assert seen["pid"] not in spares_of(worker)


def test_with_spares_turned_off_runs_start_as_prefect_starts_them(
    client: SyncPrefectClient, tmp_path: Path
) -> None:
    own_pool = create_pool(client)
    with running_worker(own_pool, tmp_path / "worker.log", SOCIALNET_WORKER_SPARE="0") as worker:
        seen = probe(client, own_pool, tmp_path)[1]
        assert seen["command"][1:] == ["-m", "prefect.engine"]
        assert not spares_of(worker)


def test_a_stopped_or_a_killed_worker_leaves_no_spare_behind(pool: str, tmp_path: Path) -> None:
    # Both at once: each worker start pays for two Prefect imports.
    with (
        running_worker(pool, tmp_path / "stopped.log") as stopped,
        running_worker(pool, tmp_path / "killed.log") as killed,
    ):
        spare_of_stopped = wait_for(lambda: spares_of(stopped), 60, "the stopped worker's spare")
        spare_of_killed = wait_for(lambda: spares_of(killed), 60, "the killed worker's spare")
        stopped.send_signal(signal.SIGTERM)
        killed.send_signal(signal.SIGKILL)
        stopped.wait(timeout=30)
        killed.wait(timeout=30)
        for spare in (*spare_of_stopped, *spare_of_killed):
            wait_for(partial(not_running, spare), 20, f"the spare {spare} ending")


def test_a_spare_killed_while_waiting_does_not_cost_a_run(
    client: SyncPrefectClient, pool: str, worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    waiting = wait_for(lambda: spares_of(worker), 60, "a waiting spare")
    for pid in waiting:
        os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer would
    seen = probe(client, pool, tmp_path)[1]
    assert seen["pid"] not in waiting
    assert SPARE in " ".join(seen["command"])
