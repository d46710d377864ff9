"""The control plane on Prefect's scaled architecture, alone (no local platform), as `up` starts
it: its own PostgreSQL and Redis, two API servers without services behind HAProxy, one services
process, two workers, basic auth; an older SQLite control plane's history carried over; history
kept over `down`/`up`; what stops and what recovers when Redis stops."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from socialnet_ops.control import control_plane
from socialnet_ops.platforms.local.tools import find_binary, free_port, read_secret, write_atomic
from tests.support.prefect import state_root
from tests.support.processes import running_process
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _client_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}


def seed_sqlite_control_plane(folder: Path) -> str:
    """The first control plane's database: one Prefect server on SQLite, with a finished run."""
    home = folder / "prefect"
    home.mkdir(parents=True)
    port = free_port(set())
    env = _client_env() | {
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false",
    }
    command = [
        find_binary("prefect"),
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    name = f"from-sqlite-{secrets.token_hex(3)}"
    with (
        running_process(command, env, folder / "sqlite-server.log"),
        httpx.Client(base_url=f"http://127.0.0.1:{port}/api", timeout=10) as api,
    ):

        def healthy() -> bool:
            try:
                return api.get("/health").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 120, "the SQLite Prefect server", interval_s=0.5)
        flow = api.post("/flows/", json={"name": "sqlite-era"}).json()
        created = api.post(
            "/flow_runs/",
            json={"flow_id": flow["id"], "name": name, "state": {"type": "COMPLETED"}},
        )
        assert created.status_code == 201, created.text
    return name


@pytest.fixture(scope="module")
def scaled() -> Iterator[dict[str, Any]]:
    with state_root("sncs-") as root:
        folder = root / "control-plane"
        folder.mkdir()
        seeded = seed_sqlite_control_plane(folder)
        # Ports of its own: another suite's control plane may hold the default ones.
        taken: set[int] = set()
        ports = {}
        for key in (
            "api_port", "api_server_1_port", "api_server_2_port", "control_postgres_port",
            "redis_port", "webhook_port", "git_port",
        ):  # fmt: skip
            ports[key] = free_port(taken)
            taken.add(ports[key])
        write_atomic(folder / "control-plane.json", json.dumps(ports))
        lines: list[str] = []
        try:
            settings = control_plane.up(progress=lines.append)
            yield {"settings": settings, "seeded": seeded, "progress": lines, "folder": folder}
        finally:
            control_plane.down()


def api(scaled: dict[str, Any], auth: bool = True) -> httpx.Client:
    credential = control_plane.client_auth() if auth else None
    return httpx.Client(
        base_url=scaled["settings"]["PREFECT_API_URL"],
        timeout=15,
        auth=tuple(credential.split(":", 1)) if credential else None,  # type: ignore[arg-type]
    )


def run_probe(client: httpx.Client, label: str, timeout: float = 90) -> dict[str, Any]:
    """A run of the `probe` deployment, through a worker, to its end."""
    deployment = client.get("/deployments/name/probe/probe").json()
    created = client.post(
        f"/deployments/{deployment['id']}/create_flow_run", json={"parameters": {"label": label}}
    )
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]

    def finished() -> dict[str, Any] | None:
        run: dict[str, Any] = client.get(f"/flow_runs/{run_id}").json()
        return run if run["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED"} else None

    return dict(wait_for(finished, timeout, f"probe run {label}", interval_s=0.5))


def test_up_runs_the_scaled_architecture(scaled: dict[str, Any]) -> None:
    status = control_plane.control_plane_status()
    assert status["state"] == "running", status
    assert set(status["programs"]) == {
        "control-postgres", "redis", "prefect-api-1", "prefect-api-2", "prefect-services",
        "prefect-balancer", "prefect-worker-1", "prefect-worker-2", "webhook-receiver",
        "git-remote",
    }  # fmt: skip
    config = (scaled["folder"] / "prefect-balancer.cfg").read_text()
    assert config.count(" server api-") == 2
    with api(scaled) as client:
        workers = client.post("/work_pools/socialnet/workers/filter", json={}).json()
        online = [worker for worker in workers if worker["status"] == "ONLINE"]
        assert len(online) >= 2, workers
        # Messaging goes through Redis: the services process sees what the API servers publish.
        assert run_probe(client, "scaled")["state"]["type"] == "COMPLETED"


def test_requests_without_the_credential_are_refused(scaled: dict[str, Any]) -> None:
    with api(scaled, auth=False) as anonymous:
        assert anonymous.get("/health").status_code == 200  # the balancer's health check
        assert anonymous.post("/flows/filter", json={}).status_code == 401
        # Secret blocks (the alert block's webhook token) are unreadable without it.
        blocks = anonymous.post("/block_documents/filter", json={"include_secrets": True})
        assert blocks.status_code == 401
    with httpx.Client(
        base_url=scaled["settings"]["PREFECT_API_URL"], auth=("socialnet", "guess"), timeout=10
    ) as wrong:
        assert wrong.post("/flows/filter", json={}).status_code == 401
    with api(scaled) as client:
        names = {b["name"] for b in client.post("/block_documents/filter", json={}).json()}
        assert "socialnet-alerts" in names


def test_the_credentials_stay_in_their_files(scaled: dict[str, Any]) -> None:
    folder: Path = scaled["folder"]
    stack = control_plane.stack()
    password = stack.auth_string().split(":", 1)[1]
    secret_values = [
        password,
        stack.redis_password(),
        read_secret(stack.secrets / "prefect-db-password"),
    ]
    for path in (stack.auth_file, stack.server_env, stack.client_env, folder / "redis.conf"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    readable = [
        *folder.glob("*.conf"),
        *folder.glob("*.cfg"),
        *(folder / "programs").glob("*.conf"),
        *(folder / "logs").glob("*.log"),
        folder / "control-plane.json",
    ]
    for path in readable:
        if path.name == "redis.conf":
            continue
        text = path.read_text(errors="replace")
        assert not any(value in text for value in secret_values), f"a secret is in {path}"
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert not any(value in processes for value in secret_values), "a secret is in `ps`"
    assert not any(any(v in line for v in secret_values) for line in scaled["progress"])


def test_the_sqlite_control_planes_history_is_carried_over(scaled: dict[str, Any]) -> None:
    assert any("copied to PostgreSQL: 1 flow run(s)" in line for line in scaled["progress"])
    assert (scaled["folder"] / "prefect" / "prefect.db.migrated").exists()
    assert not (scaled["folder"] / "prefect" / "prefect.db").exists()
    with api(scaled) as client:
        runs = client.post(
            "/flow_runs/filter", json={"flow_runs": {"name": {"any_": [scaled["seeded"]]}}}
        ).json()
        assert [run["state"]["type"] for run in runs] == ["COMPLETED"]


def test_without_redis_reads_work_writes_fail_and_all_recovers(scaled: dict[str, Any]) -> None:
    supervisor = control_plane._supervisor()
    supervisor.call("stopProcess", "redis", True)
    try:
        with api(scaled) as client:
            # What keeps working: reading (the UI's pages, `status`), from PostgreSQL.
            assert client.post("/flow_runs/filter", json={"limit": 5}).status_code == 200
            # What stops: writes that publish events (new flows and runs, state changes).
            created = client.post("/flows/", json={"name": f"no-redis-{secrets.token_hex(3)}"})
            assert created.status_code >= 500
    finally:
        supervisor.call("startProcess", "redis", True)
    # It recovers by itself when Redis returns: no program restarted.
    with api(scaled) as client:

        def accepted() -> bool:
            flow = client.post("/flows/", json={"name": f"redis-back-{secrets.token_hex(3)}"})
            return flow.status_code in {200, 201}

        wait_for(accepted, 60, "writes after Redis returned", interval_s=1)
        assert run_probe(client, "after-redis")["state"]["type"] == "COMPLETED"


def test_history_stays_over_down_and_up(scaled: dict[str, Any]) -> None:
    with api(scaled) as client:
        before = len(client.post("/flow_runs/filter", json={}).json())
    control_plane.down()
    assert control_plane.control_plane_status()["state"] == "stopped"
    lines: list[str] = []
    control_plane.up(progress=lines.append)
    assert not any("copied to PostgreSQL" in line for line in lines)
    with api(scaled) as client:
        runs = client.post("/flow_runs/filter", json={}).json()
        assert len(runs) >= before
        assert scaled["seeded"] in {run["name"] for run in runs}
        started = time.monotonic()
        assert run_probe(client, "after-up")["state"]["type"] == "COMPLETED"
        assert time.monotonic() - started < 90
