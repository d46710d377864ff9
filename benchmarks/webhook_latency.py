"""GitLab webhook receiver: reply latency under 100 concurrent deliveries, and delivery -> Running.

Everything real on 127.0.0.1: a Prefect server, a process worker polling every second, the receiver
run by uvicorn exactly as the control plane runs it, and a fake GitLab API taking the statuses.

Phase 1: 100 push deliveries at once (distinct commits) on a deployment without a worker; the
receiver's reply latency is timed at the client, and every delivery must yield exactly one run.
Phase 2: 5 deliveries one at a time on a deployment a real worker runs; time from sending the
delivery to the run's start_time (state Running). One at a time, because 100 process runs started
together on 2 cores would time the machine, not the receiver.

Prints one JSON line: {"benchmark": "webhook_latency", "receiver_p50_ms", "receiver_p99_ms",
"median_to_running_s", ...}; goals: receiver_p99_ms <= 50, median_to_running_s <= 2.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from socialnet_ops.paths import repo_root
from tests.integration.webhooks import payloads
from tests.integration.webhooks.fake_gitlab import TOKEN, free_port, running_fake_gitlab

BURST = 100
SEQUENTIAL = 5
POOL = "webhook-bench"
FLOW = "webhook-bench"

MAPPING = """
rules:
  - name: burst
    event: push
    match: {branch: burst}
    deployment: webhook-bench/burst
    parameters: {env: staging, version: "{branch_slug}-{short_sha}", ref: "{sha}"}
  - name: worker
    event: push
    match: {branch: worker}
    deployment: webhook-bench/worker
    parameters: {env: staging, version: "{branch_slug}-{short_sha}", ref: "{sha}"}
"""


def _wait_http(url: str, timeout: float, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited; see {log}:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s; see {log}")


@contextmanager
def process(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        child = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=repo_root()
        )
    try:
        yield child
    finally:
        child.terminate()
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _secret(folder: Path, name: str, value: str) -> Path:
    path = folder / name
    path.write_text(value)
    path.chmod(0o600)
    return path


def register(api_url: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    schema = {
        "type": "object",
        "properties": {
            "env": {"type": "string"},
            "version": {"type": "string"},
            "ref": {"type": "string"},
            "gitlab": {"type": "object"},
        },
        "required": ["env", "version"],
    }
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        flow_id = client.create_flow_from_name(FLOW)
        client.create_deployment(flow_id=flow_id, name="burst", parameter_openapi_schema=schema)
        client.create_deployment(
            flow_id=flow_id,
            name="worker",
            parameter_openapi_schema=schema,
            work_pool_name=POOL,
            entrypoint="tests/integration/webhooks/trivial_flow.py:noop",
            path=str(repo_root()),
            pull_steps=[
                {"prefect.deployments.steps.set_working_directory": {"directory": str(repo_root())}}
            ],
        )


async def burst(receiver: str, token: str) -> tuple[list[float], list[str]]:
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=BURST)
    async with httpx.AsyncClient(base_url=receiver, limits=limits, timeout=30) as client:
        # Warm the connections and the receiver's code paths first.
        await asyncio.gather(*(client.get("/healthz") for _ in range(BURST)))
        ids = [str(uuid.uuid4()) for _ in range(BURST)]
        bodies = [json.dumps(payloads.push("burst", payloads.new_sha())).encode() for _ in ids]

        async def send(event_id: str, body: bytes) -> float:
            started = time.perf_counter()
            response = await client.post(
                "/hooks/gitlab",
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Gitlab-Event": "Push Hook",
                    "X-Gitlab-Token": token,
                    "X-Gitlab-Event-UUID": event_id,
                },
            )
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 202:
                raise RuntimeError(f"delivery answered {response.status_code}: {response.text}")
            return elapsed

        latencies = await asyncio.gather(*(send(i, b) for i, b in zip(ids, bodies, strict=True)))
    return list(latencies), ids


def count_runs(api: httpx.Client, deployment: str) -> int:
    found = api.get(f"/deployments/name/{FLOW}/{deployment}").json()
    return int(
        api.post(
            "/flow_runs/count", json={"flow_runs": {"deployment_id": {"any_": [found["id"]]}}}
        ).json()
    )


def to_running(api: httpx.Client, receiver: str, token: str) -> list[float]:
    seconds = []
    for _ in range(SEQUENTIAL):
        event_id = str(uuid.uuid4())
        sent = time.time()
        httpx.post(
            f"{receiver}/hooks/gitlab",
            json=payloads.push("worker", payloads.new_sha()),
            headers={
                "X-Gitlab-Event": "Push Hook",
                "X-Gitlab-Token": token,
                "X-Gitlab-Event-UUID": event_id,
            },
            timeout=10,
        ).raise_for_status()
        deadline = time.monotonic() + 60
        start_time = None
        while time.monotonic() < deadline and start_time is None:
            runs = api.post(
                "/flow_runs/filter",
                json={"flow_runs": {"tags": {"all_": [f"gitlab.event_id:{event_id}"]}}},
            ).json()
            if runs and runs[0]["start_time"]:
                start_time = runs[0]["start_time"]
            time.sleep(0.05)
        if start_time is None:
            raise RuntimeError("a delivered run did not reach Running within 60 s")
        from datetime import datetime

        seconds.append(datetime.fromisoformat(start_time).timestamp() - sent)
        time.sleep(1)  # let the run finish; the next delivery meets an idle worker
    return seconds


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to cost a delivery whatever the load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="snwh-"))
    prefect_port, receiver_port = free_port(), free_port()
    api_url = f"http://127.0.0.1:{prefect_port}/api"
    webhook_token = secrets.token_urlsafe(24)
    gitflow = folder / "gitflow.yaml"
    gitflow.write_text(MAPPING)
    base_env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    prefect_env = {
        **base_env,
        "PREFECT_HOME": str(folder / "prefect"),
        "PREFECT_API_URL": api_url,
        "PREFECT_UI_URL": f"http://127.0.0.1:{prefect_port}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    prefect = str(Path(sys.executable).with_name("prefect"))
    with ExitStack() as stack:
        fake = stack.enter_context(running_fake_gitlab())
        server_log = folder / "server.log"
        server = stack.enter_context(
            process(
                [
                    prefect,
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(prefect_port),
                    "--analytics-off",
                ],
                prefect_env,
                server_log,
            )
        )
        _wait_http(f"{api_url}/health", 180, server, server_log)
        register(api_url)
        worker_log = folder / "worker.log"
        stack.enter_context(
            process(
                [prefect, "worker", "start", "--pool", POOL, "--type", "process"],
                prefect_env,
                worker_log,
            )
        )
        receiver_env = {
            **prefect_env,
            "SOCIALNET_WEBHOOK_TOKEN_FILE": str(_secret(folder, "webhook-token", webhook_token)),
            "SOCIALNET_GITFLOW_FILE": str(gitflow),
            "SOCIALNET_GITLAB_URL": fake.url,
            "SOCIALNET_GITLAB_TOKEN_FILE": str(_secret(folder, "gitlab-token", TOKEN)),
        }
        receiver_log = folder / "receiver.log"
        receiver_process = stack.enter_context(
            process(
                [
                    str(Path(sys.executable).with_name("uvicorn")),
                    "webhooks.app:create_app",
                    "--factory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(receiver_port),
                    "--no-access-log",
                ],
                receiver_env,
                receiver_log,
            )
        )
        receiver = f"http://127.0.0.1:{receiver_port}"
        _wait_http(f"{receiver}/healthz", 120, receiver_process, receiver_log)
        api = stack.enter_context(httpx.Client(base_url=api_url, timeout=30))
        # Wait for the worker to poll before timing anything against it.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            workers = api.post(f"/work_pools/{POOL}/workers/filter", json={}).json()
            if workers:
                break
            time.sleep(0.5)

        load_before = os.getloadavg()[0]
        cpu_before = cpu_seconds(receiver_process.pid)
        latencies, _ = asyncio.run(burst(receiver, webhook_token))
        cpu_burst = cpu_seconds(receiver_process.pid) - cpu_before
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and count_runs(api, "burst") < BURST:
            time.sleep(0.5)
        runs_created = count_runs(api, "burst")
        running = to_running(api, receiver, webhook_token)
        statuses = len(fake.statuses())
    result = {
        "benchmark": "webhook_latency",
        "deliveries": BURST,
        "receiver_p50_ms": round(percentile(latencies, 0.50), 1),
        "receiver_p99_ms": round(percentile(latencies, 0.99), 1),
        "receiver_max_ms": round(max(latencies), 1),
        "receiver_cpu_ms_per_delivery": round(cpu_burst * 1000 / BURST, 2),
        "runs_created": runs_created,
        "median_to_running_s": round(statistics.median(running), 2),
        "to_running_s": [round(value, 2) for value in running],
        "commit_statuses_posted": statuses,
        "load_average_1m": round(load_before, 1),
        "cores": os.cpu_count(),
        "goals": {"receiver_p99_ms": 50, "median_to_running_s": 2},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
