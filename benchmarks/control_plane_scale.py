"""The control plane on SQLite (one Prefect server) vs the scaled one (`socialnet-ops up`:
PostgreSQL, Redis, two API servers behind HAProxy, a services process, two workers), same machine.

1. Bursts: 100 GitLab push deliveries at once to the receiver (webhook_latency's client and
   mapping); seconds until all 100 runs exist, server errors logged meanwhile (tracebacks, ERROR
   lines, "database is locked"), the receiver's reply p99. On SQLite: one server as the first
   control plane ran it; scaled: the control plane `up` starts, its own receiver.
2. Delivery -> Running on the scaled control plane (webhook_latency's sequential deliveries).
3. RUNS runs of the `probe` deployment through one worker, then through two: runs per minute.
   Each worker runs one flow at a time (SOCIALNET_WORKER_LIMIT=1), as a worker on a one-core
   host would. On this machine both workers share the same 2 cores with the servers, so trivial
   runs (CPU: an engine process, its API calls) gain little from a second worker; WAITING_RUNS
   runs that first wait WAIT_S (as runs waiting on a rollout do) show what a worker adds when
   the CPU is not the limit.

Prints one JSON line with `sqlite_all_runs_exist_s`, `scaled_all_runs_exist_s`,
`scaled_server_errors`, `receiver_p99_ms`, `one_worker_runs_per_min`, `two_workers_runs_per_min`,
`worker_speedup`, `median_to_running_s`; goals: all runs exist <= 3 s, 0 server errors, receiver
p99 <= 50 ms, speedup >= 1.7, median to Running <= 2 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from benchmarks.webhook_latency import (
    FINAL,
    MAPPING,
    _secret,
    _wait_http,
    burst,
    count_runs,
    percentile,
    register,
    to_running,
)
from socialnet_ops.core.paths import repo_root
from socialnet_ops.platforms.local.tools import port_answers
from tests.integration.webhooks.fake_gitlab import TOKEN, free_port, running_fake_gitlab
from tests.support.processes import running_process
from tests.support.waiting import wait_for

BURSTS = 3
RUNS = int(os.environ.get("CONTROL_PLANE_BENCH_RUNS", "300"))
RUNS_TIMEOUT_S = 1800
# Runs that wait WAIT_S first (on a rollout, a backup): a worker's capacity, not the CPU, limits.
WAITING_RUNS = int(os.environ.get("CONTROL_PLANE_BENCH_WAITING_RUNS", "30"))
WAIT_S = 5.0
ERROR_LINE = re.compile(r"Traceback|\bERROR\b|database is locked")


def log_errors(logs: list[Path], offsets: dict[Path, int]) -> int:
    count = 0
    for log in logs:
        with log.open("rb") as handle:
            handle.seek(offsets.get(log, 0))
            count += len(ERROR_LINE.findall(handle.read().decode("utf-8", "replace")))
    return count


def log_sizes(logs: list[Path]) -> dict[Path, int]:
    return {log: log.stat().st_size if log.exists() else 0 for log in logs}


def bursts(api: httpx.Client, port: int, token: str, pid: int, logs: list[Path]) -> dict[str, Any]:
    """BURSTS bursts of 100: seconds until all runs exist (median), errors, reply p99."""
    all_exist: list[float] = []
    p99: list[float] = []
    errors = 0
    for index in range(BURSTS):
        offsets = log_sizes(logs)
        sent = time.monotonic()
        latencies, _ = asyncio.run(burst(port, token, pid))
        p99.append(percentile(latencies, 0.99))
        expected = 100 * (index + 1)
        deadline = time.monotonic() + 300
        while count_runs(api, "burst") < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        all_exist.append(round(time.monotonic() - sent, 1))
        errors += log_errors(logs, offsets)
    return {
        "all_runs_exist_s": statistics.median(all_exist),
        "all_runs_exist_s_per_burst": all_exist,
        "server_errors": errors,
        "receiver_p99_ms": round(statistics.median(p99), 1),
    }


def sqlite_control_plane(folder: Path, stack: ExitStack, gitlab_url: str) -> dict[str, Any]:
    """The first control plane: one `prefect server start` on SQLite, the receiver beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    prefect_port, receiver_port = free_port(), free_port()
    api_url = f"http://127.0.0.1:{prefect_port}/api"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env |= {
        "PREFECT_HOME": str(folder / "prefect"),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    log = folder / "server.log"
    prefect = str(Path(sys.executable).with_name("prefect"))
    server = stack.enter_context(
        running_process(
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
            env,
            log,
            cwd=repo_root(),
        )
    )
    _wait_http(f"{api_url}/health", 180, server, log)
    register(api_url)
    token = secrets.token_urlsafe(24)
    from socialnet_ops.control.control_plane import receiver_command

    receiver_env = env | {
        "SOCIALNET_WEBHOOK_TOKEN_FILE": str(_secret(folder, "webhook-token", token)),
        "SOCIALNET_GITFLOW_FILE": str(folder.parent / "gitflow.yaml"),
        "SOCIALNET_GITLAB_URL": gitlab_url,
        "SOCIALNET_GITLAB_TOKEN_FILE": str(folder.parent / "gitlab-token"),
    }
    receiver_log = folder / "receiver.log"
    receiver = stack.enter_context(
        running_process(receiver_command(receiver_port), receiver_env, receiver_log, repo_root())
    )
    _wait_http(f"http://127.0.0.1:{receiver_port}/healthz", 120, receiver, receiver_log)
    api = stack.enter_context(httpx.Client(base_url=api_url, timeout=30))
    return bursts(api, receiver_port, token, receiver.pid, [log])


def run_probes(api: httpx.Client, count: int, wait_seconds: float = 0.0) -> float:
    """Runs per minute of `count` probe runs created at once, until the last one ends."""
    deployment = api.get("/deployments/name/probe/probe").json()
    started = time.monotonic()
    ids = []
    for index in range(count):
        created = api.post(
            f"/deployments/{deployment['id']}/create_flow_run",
            json={"parameters": {"label": f"bench-{index}", "wait_seconds": wait_seconds}},
        )
        created.raise_for_status()
        ids.append(created.json()["id"])
    deadline = time.monotonic() + RUNS_TIMEOUT_S
    while time.monotonic() < deadline:
        done = api.post(
            "/flow_runs/count",
            json={"flow_runs": {"id": {"any_": ids}, "state": {"type": {"any_": sorted(FINAL)}}}},
        ).json()
        if done >= count:
            break
        time.sleep(1)
    else:
        raise RuntimeError(f"{count} probe runs did not end within {RUNS_TIMEOUT_S} s")
    return round(count * 60 / (time.monotonic() - started), 1)


def scaled_control_plane(folder: Path, gitlab_url: str) -> dict[str, Any]:
    from socialnet_ops.control import control_plane

    os.environ["SOCIALNET_STATE_DIR"] = str(folder / "state")
    os.environ["SOCIALNET_WORKER_LIMIT"] = "1"
    os.environ["SOCIALNET_GITFLOW_FILE"] = str(folder / "gitflow.yaml")
    os.environ["SOCIALNET_GITLAB_URL"] = gitlab_url
    os.environ["SOCIALNET_GITLAB_TOKEN_FILE"] = str(folder / "gitlab-token")
    (folder / "state").mkdir(mode=0o755)
    try:
        settings = control_plane.up(progress=lambda _line: None)
        auth = control_plane.client_auth() or ""
        register(settings["PREFECT_API_URL"], pool=control_plane.WORK_POOL, auth=auth)
        port = json.loads((control_plane.control_plane_dir() / "control-plane.json").read_text())[
            "webhook_port"
        ]
        wait_for(
            lambda: port_answers(port), 120, "the control plane's webhook receiver", interval_s=0.3
        )
        token = control_plane.read_secret_file(control_plane.webhook_token_file(), "token")
        user, password = auth.split(":", 1)
        logs = [control_plane.control_plane_dir() / "logs" / f"{name}.log" for name in
                ("prefect-api-1", "prefect-api-2", "prefect-services")]  # fmt: skip
        receiver_pid = control_plane._supervisor().process("webhook-receiver")["pid"]  # type: ignore[index]
        with httpx.Client(
            base_url=settings["PREFECT_API_URL"], timeout=30, auth=(user, password)
        ) as api:
            result = bursts(api, port, token, receiver_pid, logs)
            receiver = f"http://127.0.0.1:{port}"
            running = to_running(api, receiver, token)
            result["median_to_running_s"] = round(
                statistics.median(t["running"] for t in running), 2
            )
            supervisor = control_plane._supervisor()
            supervisor.call("stopProcess", "prefect-worker-2", True)
            result["one_worker_runs_per_min"] = run_probes(api, RUNS)
            result["one_worker_waiting_runs_per_min"] = run_probes(api, WAITING_RUNS, WAIT_S)
            supervisor.call("startProcess", "prefect-worker-2", True)
            time.sleep(5)  # its spare engine is warm, as the first worker's is
            result["two_workers_runs_per_min"] = run_probes(api, RUNS)
            result["two_workers_waiting_runs_per_min"] = run_probes(api, WAITING_RUNS, WAIT_S)
        return result
    finally:
        control_plane.down()


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="sncps-"))
    folder.chmod(0o755)
    (folder / "gitflow.yaml").write_text(MAPPING)
    _secret(folder, "gitlab-token", TOKEN)
    load_before = os.getloadavg()[0]
    try:
        with ExitStack() as stack:
            fake = stack.enter_context(running_fake_gitlab())
            with ExitStack() as sqlite_stack:
                sqlite = sqlite_control_plane(folder / "sqlite", sqlite_stack, fake.url)
            scaled = scaled_control_plane(folder, fake.url)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    speedup = scaled["two_workers_runs_per_min"] / scaled["one_worker_runs_per_min"]
    print(
        json.dumps(
            {
                "benchmark": "control_plane_scale",
                "sqlite_all_runs_exist_s": sqlite["all_runs_exist_s"],
                "scaled_all_runs_exist_s": scaled["all_runs_exist_s"],
                "sqlite_server_errors": sqlite["server_errors"],
                "scaled_server_errors": scaled["server_errors"],
                "sqlite_receiver_p99_ms": sqlite["receiver_p99_ms"],
                "receiver_p99_ms": scaled["receiver_p99_ms"],
                "all_runs_exist_s_per_burst": {
                    "sqlite": sqlite["all_runs_exist_s_per_burst"],
                    "scaled": scaled["all_runs_exist_s_per_burst"],
                },
                "runs": RUNS,
                "one_worker_runs_per_min": scaled["one_worker_runs_per_min"],
                "two_workers_runs_per_min": scaled["two_workers_runs_per_min"],
                "worker_speedup": round(speedup, 2),
                "waiting_runs": WAITING_RUNS,
                "wait_s": WAIT_S,
                "one_worker_waiting_runs_per_min": scaled["one_worker_waiting_runs_per_min"],
                "two_workers_waiting_runs_per_min": scaled["two_workers_waiting_runs_per_min"],
                "waiting_worker_speedup": round(
                    scaled["two_workers_waiting_runs_per_min"]
                    / scaled["one_worker_waiting_runs_per_min"],
                    2,
                ),
                "median_to_running_s": scaled["median_to_running_s"],
                "load_average_1m": round(load_before, 1),
                "cores": os.cpu_count(),
                "goals": {
                    "scaled_all_runs_exist_s": 3,
                    "scaled_server_errors": 0,
                    "receiver_p99_ms": 50,
                    "worker_speedup": 1.7,
                    "median_to_running_s": 2,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
