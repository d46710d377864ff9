"""`socialnet-ops up/status/down` as a user runs them: the control plane on Prefect's scaled
architecture (its own PostgreSQL and Redis, two API servers without services behind HAProxy, one
services process, two workers, basic auth), deployments, limits and the rollback automation, plus
the local platform. Before `up`, an older SQLite control plane holds a finished run: its history is
carried over, and kept over `down`/`up`. Drills: an API server killed and PostgreSQL restarted
under a deploy, Redis stopped, a worker killed under a release, a failing rollback."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from socialnet_ops.adapters.pg_backups import drop_restored_database, restore_dump_into
from socialnet_ops.control import control_plane as plane
from socialnet_ops.core.backups import DatabaseAccess
from socialnet_ops.core.environments import load_environment
from socialnet_ops.core.paths import control_plane_backup_access
from socialnet_ops.platforms import control_plane_backup_target
from socialnet_ops.platforms.local import LocalPlatform
from socialnet_ops.platforms.local.tools import find_binary, free_port, read_secret
from tests.support.prefect import state_root
from tests.support.processes import descendants, running_process
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _client_env() -> dict[str, str]:
    # The CLI must find its control plane by itself: no Prefect settings leak in from pytest.
    return {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}


def cli(
    *arguments: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["socialnet-ops", *arguments],
        env=_client_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"socialnet-ops {' '.join(arguments)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


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
        httpx.Client(base_url=f"http://127.0.0.1:{port}/api", timeout=10) as client,
    ):

        def healthy() -> bool:
            try:
                return client.get("/health").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 120, "the SQLite Prefect server", interval_s=0.5)

        def post(path: str, body: dict[str, Any]) -> dict[str, Any] | None:
            # A SQLite server answers 503 while its services start on a busy machine.
            answer = client.post(path, json=body)
            return dict(answer.json()) if answer.status_code in {200, 201} else None

        flow = wait_for(lambda: post("/flows/", {"name": "sqlite-era"}), 60, "a flow", 1)
        run = {"flow_id": flow["id"], "name": name, "state": {"type": "COMPLETED"}}
        wait_for(lambda: post("/flow_runs/", run), 60, "a finished run", 1)
    return name


@pytest.fixture(scope="module")
def control_plane() -> Iterator[dict[str, Any]]:
    with state_root("sncp-") as root:
        folder = root / "control-plane"
        folder.mkdir()
        seeded = seed_sqlite_control_plane(folder)
        try:
            up = cli("up", "--env", "local")
            status = json.loads(cli("status", "--json").stdout)
            yield status | {"seeded": seeded, "up_said": up.stdout + up.stderr, "folder": folder}
        finally:
            cli("down", check=False)


def api(status: dict[str, Any], auth: bool = True) -> httpx.Client:
    """The control plane's API through its balancer, with the credential `up` generated."""
    credential = plane.client_auth()
    assert credential, "the control plane has no API credential"
    user, password = credential.split(":", 1)
    return httpx.Client(
        base_url=status["control_plane"]["ui_url"] + "/api",
        timeout=15,
        auth=(user, password) if auth else None,
    )


def run_probe(client: httpx.Client, label: str) -> str:
    """A run of the `probe` deployment through a worker, to its end: its final state."""
    run_id = _start(client, "probe/probe", {"label": label})
    return _wait_state(client, run_id, {"COMPLETED", "FAILED", "CRASHED"}, 90)


def test_up_runs_the_server_the_worker_and_the_local_platform(
    control_plane: dict[str, Any],
) -> None:
    assert control_plane["control_plane"]["state"] == "running"
    programs = control_plane["control_plane"]["programs"]
    assert set(programs.values()) == {"RUNNING"}, programs
    assert {"prefect-api-1", "prefect-api-2", "prefect-services", "prefect-balancer"} <= set(
        programs
    )
    assert {"prefect-worker-1", "prefect-worker-2", "webhook-receiver", "git-remote"} <= set(
        programs
    )
    assert {"control-postgres", "redis"} <= set(programs)
    balancer = (control_plane["folder"] / "prefect-balancer.cfg").read_text()
    assert balancer.count(" server api-") == 2
    local = next(row for row in control_plane["environments"] if row["name"] == "local")
    assert local["state"] == "running"
    assert {program["state"] for program in local["programs"]} == {"RUNNING"}
    assert httpx.get(local["urls"]["app"] + "/", timeout=5).status_code == 200
    with api(control_plane) as client:
        assert client.get("/health").status_code == 200
        limits = {
            limit["name"]: limit["limit"]
            for limit in client.post("/v2/concurrency_limits/filter", json={}).json()
        }
        assert {"release-local", "release-staging", "release-production"} <= set(limits)
        assert limits["release-local"] == 1
        deployments = {d["name"] for d in client.post("/deployments/filter", json={}).json()}
        assert {"deploy-local", "rollback-local", "deploy-production"} <= deployments
        workers = client.post("/work_pools/socialnet/workers/filter", json={}).json()
        assert len([w for w in workers if w["status"] == "ONLINE"]) >= 2, workers
        # Messaging goes through Redis: the services process sees what the API servers publish.
        assert run_probe(client, "scaled") == "COMPLETED"


def test_the_api_credential_is_in_the_local_vault_and_required(
    control_plane: dict[str, Any],
) -> None:
    from socialnet_ops.adapters import vault
    from socialnet_ops.control.control_plane import CREDENTIAL_VAULT_PATH, client_auth

    local = LocalPlatform(load_environment("local"))
    session = vault.VaultSession(
        local.vault_address,
        vault.TokenLogin(lambda: local.vault_token_file.read_text().strip()),
    )
    stored = vault.read_secret(session, "socialnet", CREDENTIAL_VAULT_PATH)
    assert stored is not None and stored.data["auth-string"] == client_auth()
    with api(control_plane, auth=False) as anonymous:
        assert anonymous.get("/health").status_code == 200  # the balancer's health check
        assert anonymous.post("/flows/filter", json={}).status_code == 401
        # Secret blocks (the alert block's webhook token) are unreadable without it.
        blocks = anonymous.post("/block_documents/filter", json={"include_secrets": True})
        assert blocks.status_code == 401
    with httpx.Client(
        base_url=control_plane["control_plane"]["ui_url"] + "/api",
        auth=("socialnet", "guess"),
        timeout=10,
    ) as wrong:
        assert wrong.post("/flows/filter", json={}).status_code == 401
    with api(control_plane) as client:
        names = {b["name"] for b in client.post("/block_documents/filter", json={}).json()}
        assert "socialnet-alerts" in names


def test_the_credentials_stay_in_their_files(control_plane: dict[str, Any]) -> None:
    folder: Path = control_plane["folder"]
    stack = plane.stack()
    secret_values = [
        stack.auth_string().split(":", 1)[1],
        stack.redis_password(),
        read_secret(stack.secrets / "prefect-db-password"),
        read_secret(stack.secrets / "prefect-backup-password"),
    ]
    for path in (stack.auth_file, stack.server_env, stack.client_env, folder / "redis.conf"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # The workers' logs carry every flow's output: nobody else may list or read them.
    assert stat.S_IMODE((folder / "logs").stat().st_mode) == 0o700
    readable = [
        *folder.glob("*.cfg"),
        *(path for path in folder.glob("*.conf") if path.name != "redis.conf"),
        *(folder / "programs").glob("*.conf"),
        *(folder / "logs").glob("*.log"),
        folder / "control-plane.json",
    ]
    for path in readable:
        text = path.read_text(errors="replace")
        assert not any(value in text for value in secret_values), f"a secret is in {path}"
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert not any(value in processes for value in secret_values), "a secret is in `ps`"
    assert not any(value in control_plane["up_said"] for value in secret_values)


def test_the_sqlite_control_planes_history_is_carried_over(control_plane: dict[str, Any]) -> None:
    assert "copied to PostgreSQL: 1 flow run(s)" in control_plane["up_said"]
    assert (control_plane["folder"] / "prefect" / "prefect.db.migrated").exists()
    assert not (control_plane["folder"] / "prefect" / "prefect.db").exists()
    with api(control_plane) as client:
        runs = client.post(
            "/flow_runs/filter",
            json={"flow_runs": {"name": {"any_": [control_plane["seeded"]]}}},
        ).json()
        assert [run["state"]["type"] for run in runs] == ["COMPLETED"]


def test_up_again_changes_nothing(control_plane: dict[str, Any]) -> None:
    again = cli("up", "--env", "local")
    assert "deployments unchanged" in again.stdout
    status = json.loads(cli("status", "--json").stdout)
    assert status["control_plane"]["ui_url"] == control_plane["control_plane"]["ui_url"]


def _runs_of(client: httpx.Client, deployment: str) -> list[dict[str, Any]]:
    found = client.get(f"/deployments/name/{deployment}").json()
    runs: list[dict[str, Any]] = client.post(
        "/flow_runs/filter", json={"flow_runs": {"deployment_id": {"any_": [found["id"]]}}}
    ).json()
    return runs


def _start(client: httpx.Client, deployment: str, parameters: dict[str, Any]) -> str:
    found = client.get(f"/deployments/name/{deployment}").json()
    # The server's SQLite may answer 5xx for a moment under the suite's load: ask again.
    for _ in range(5):
        created = client.post(
            f"/deployments/{found['id']}/create_flow_run", json={"parameters": parameters}
        )
        if created.status_code < 500:
            break
        time.sleep(2)
    assert created.status_code == 201, f"{created.status_code}: {created.text}"
    return str(created.json()["id"])


def _events(client: httpx.Client, name: str, since: float) -> list[dict[str, Any]]:
    answer = client.post(
        "/events/filter",
        json={
            "filter": {
                "event": {"name": [name]},
                "occurred": {"since": datetime.fromtimestamp(since, UTC).isoformat()},
            },
            "limit": 50,
        },
    )
    answer.raise_for_status()
    events: list[dict[str, Any]] = answer.json()["events"]
    return events


# Long enough for the automation to have started a run had it been triggered (it takes ~1-5 s).
AUTOMATION_QUIET_SECONDS = 25


def test_deploys_and_rollbacks_that_change_nothing_are_rejected_and_start_no_rollback(
    control_plane: dict[str, Any],
) -> None:
    # A bad version, a ref that is no commit and a version never released: each run fails
    # before it changes anything. Before the fix each emitted `socialnet.release.failed` with
    # `rollback: true` and the automation started `rollback-local`.
    since = time.time()
    with api(control_plane) as client:
        rollbacks_before = len(_runs_of(client, "rollback/rollback-local"))
        runs = [
            _start(client, "deploy/deploy-local", {"env": "local", "version": "bad/version"}),
            _start(
                client, "deploy/deploy-local", {"env": "local", "version": "x", "ref": "no-ref"}
            ),
            _start(
                client, "rollback/rollback-local", {"env": "local", "version": "never-released"}
            ),
        ]
        for run in runs:
            assert _wait_state(client, run, {"FAILED", "COMPLETED", "CRASHED"}, 120) == "FAILED"
        time.sleep(AUTOMATION_QUIET_SECONDS)
        assert len(_runs_of(client, "rollback/rollback-local")) == rollbacks_before + 1, (
            "a rejected run started a rollback"
        )
        rejected = _events(client, "socialnet.release.rejected", since)
        assert len(rejected) == 2
        assert any("'no-ref' is not in" in e["payload"]["reason"] for e in rejected)
        assert len(_events(client, "socialnet.rollback.rejected", since)) == 1
        assert _events(client, "socialnet.release.failed", since) == []


def test_cli_mistakes_are_one_line_and_create_no_run(control_plane: dict[str, Any]) -> None:
    mistakes = {
        ("deploy", "--env", "local", "--version", "x", "--ref", "no-such-ref"): "git ref",
        ("rollback", "--env", "local", "--version", "never-released"): "never released",
        ("backup", "--env", "nosuch"): "unknown environment 'nosuch'",
        ("restore", "--env", "local", "--point-in-time", "yesterday"): "not an ISO 8601 time",
        ("canary", "--env", "nosuch", "--version", "v1"): "unknown environment",
        ("deploy", "--env", "local", "--versoin", "v1"): "No such option: --versoin",
        ("nosuchcmd",): "No such command 'nosuchcmd'",
        ("diff", "--env", "local", "--ref", "no-such-ref"): "git ref 'no-such-ref' is not in",
    }

    def runs(client: httpx.Client) -> set[str]:
        """Runs someone started (the scheduler's own, e.g. a nightly backup, do not count)."""
        found = client.post("/flow_runs/filter", json={"limit": 200}).json()
        return {run["id"] for run in found if not run.get("auto_scheduled")}

    with api(control_plane) as client:
        runs_before = runs(client)
        for arguments, expected in mistakes.items():
            result = cli(*arguments, check=False)
            output = (result.stdout + result.stderr).strip()
            assert result.returncode == 2, output
            assert len(output.splitlines()) == 1, output
            assert output.startswith("error: ") and expected in output, output
        assert runs(client) - runs_before == set()
    alerts = json.loads(cli("status", "--json").stdout)["control_plane"]["recent_alerts"]
    assert not [alert for alert in alerts if "nosuch" in alert["subject"]]


def test_every_command_can_answer_in_json(control_plane: dict[str, Any]) -> None:
    # stdout holds one JSON object, nothing else (the run's log lines go to stderr).
    backup = json.loads(cli("backup", "--env", "local", "--json").stdout)
    assert backup["environment"] == "local"
    assert backup["backup_id"] and backup["size_bytes"] > 0
    human = cli("backup", "--env", "local").stdout.strip().splitlines()
    assert human[-1].startswith("backed up local: ") and "{" not in human[-1]
    catalog = json.loads(cli("environments", "--json").stdout)
    assert catalog["production"]["promotion"]["source"] == "staging"
    up = json.loads(cli("up", "--env", "local", "--json").stdout)
    assert up["prefect_ui"] == control_plane["control_plane"]["ui_url"]
    assert up["environments"]["local"]["app"].startswith("http://127.0.0.1:")


def test_a_failed_flow_is_one_error_line_and_the_run_link(control_plane: dict[str, Any]) -> None:
    # A canary needs a release serving to compare with: the run fails inside the flow.
    result = cli("canary", "--env", "local", "--version", "v-none", check=False)
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 2
    assert lines[-1].startswith("error: canary failed: local serves no stable release")
    assert lines[-2].startswith("run: " + control_plane["control_plane"]["ui_url"] + "/runs/")
    assert "Traceback" not in result.stdout + result.stderr
    assert "Encountered exception" not in result.stdout + result.stderr
    # No temporary Prefect server of the CLI's own, at exit or ever.
    assert "Starting temporary server" not in result.stdout + result.stderr
    verbose = cli("--verbose", "canary", "--env", "local", "--version", "v-none", check=False)
    assert "Traceback" in verbose.stdout + verbose.stderr


def test_the_webhook_receiver_answers_and_refuses_a_wrong_token(
    control_plane: dict[str, Any],
) -> None:
    hook = control_plane["control_plane"]["webhook_url"]
    assert httpx.get(hook.replace("/hooks/gitlab", "/healthz"), timeout=5).status_code == 200
    refused = httpx.post(
        hook, headers={"X-Gitlab-Token": "wrong", "X-Gitlab-Event": "Push Hook"}, json={}, timeout=5
    )
    assert refused.status_code == 401


def test_a_failed_backup_raises_an_alert_through_the_notification_block(
    control_plane: dict[str, Any],
) -> None:
    # The AWS emulator is down: the backup fails, the `notify-when-backup-fails` automation sends
    # through the `socialnet-alerts` block, and the alert reaches the control plane's inbox, which
    # `status` shows.
    supervisor = LocalPlatform(load_environment("local")).supervisor
    supervisor.call("stopProcess", "moto", True)
    try:
        failed = cli("backup", "--env", "local", check=False)
    finally:
        supervisor.call("startProcess", "moto", True)
    assert failed.returncode != 0
    alerts = _alerts_with_subject("Backup problem in local", timeout=90)
    assert alerts, "no alert arrived within 90 s of the failed backup"
    assert alerts[-1]["body"].startswith("socialnet.backup.failed: ")
    assert "s3://socialnet-backups-local" in alerts[-1]["body"]


def _alerts_with_subject(subject: str, timeout: float, since: float = 0.0) -> list[dict[str, Any]]:
    """The alerts `status` shows with this subject (received from `since` on, a time.time()),
    once the first arrives (or none)."""
    deadline = time.monotonic() + timeout
    after = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since - 1))
    alerts: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not alerts:
        time.sleep(2)
        status = json.loads(cli("status", "--json").stdout)
        alerts = [
            alert
            for alert in status["control_plane"].get("recent_alerts", [])
            if alert["subject"] == subject and alert.get("received_at", "") >= after
        ]
    return alerts


def _kill_worker_with_its_runs(client: httpx.Client, run_id: str) -> str:
    """What a lost worker machine does to a release: the worker that runs it and every run it
    started die. Returns the worker's program name."""
    from socialnet_ops.control.control_plane import _supervisor

    run_pid = int(
        str(client.get(f"/flow_runs/{run_id}").json()["infrastructure_pid"]).split(":")[-1]
    )
    for name, info in _supervisor().processes().items():
        if name.startswith("prefect-worker-") and run_pid in descendants(info["pid"]):
            for pid in [info["pid"], *descendants(info["pid"])]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return name
    pytest.fail(f"no worker runs flow run {run_id} (pid {run_pid})")


def _flow_run_state(client: httpx.Client, run_id: str) -> str:
    return str(client.get(f"/flow_runs/{run_id}").json()["state"]["type"])


def _wait_state(client: httpx.Client, run_id: str, states: set[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = _flow_run_state(client, run_id)
        if state in states:
            return state
        time.sleep(2)
    pytest.fail(f"flow run {run_id} is {state}, not {states}, after {timeout:.0f} s")


def test_a_release_whose_worker_dies_resumes_when_rerun(control_plane: dict[str, Any]) -> None:
    version = f"drill-{secrets.token_hex(3)}"
    platform = LocalPlatform(load_environment("local"))
    with api(control_plane) as client:
        deployment = client.get("/deployments/name/release/release-local").json()
        parameters = _release_parameters(version)
        # The server's SQLite may answer 5xx for a moment under the suite's load: ask again.
        for _ in range(5):
            created = client.post(
                f"/deployments/{deployment['id']}/create_flow_run",
                json={"parameters": parameters},
            )
            if created.status_code < 500:
                break
            time.sleep(2)
        assert created.status_code == 201, f"{created.status_code}: {created.text}"
        run = created.json()
        # Kill the worker while the release rolls the replicas of its deploy stage.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            programs = [p.name for p in platform.status().programs]
            if any(version in name for name in programs):
                break
            assert _flow_run_state(client, run["id"]) in {"SCHEDULED", "PENDING", "RUNNING"}
            time.sleep(0.5)
        else:
            pytest.fail("the release never started replicas")
        _kill_worker_with_its_runs(client, run["id"])
        # Its heartbeats stop: the zombie automation marks it Crashed.
        _wait_state(client, run["id"], {"CRASHED"}, timeout=240)
        # Rerun from the UI (Retry): the run is scheduled again and the restarted worker runs it.
        client.post(
            f"/flow_runs/{run['id']}/set_state",
            json={"state": {"type": "SCHEDULED", "name": "AwaitingRetry"}, "force": True},
        ).raise_for_status()
        assert _wait_state(client, run["id"], {"COMPLETED", "FAILED", "CRASHED"}, 420) == (
            "COMPLETED"
        ), client.get(f"/flow_runs/{run['id']}").json()["state"]
    status = platform.status()
    assert (status.stable_version, status.canary_version) == (version, None)
    replicas = [p.name for p in status.programs if p.name.startswith("api-")]
    # Consistent: exactly the release's replicas, nothing left over from the killed attempt.
    assert len(replicas) == platform.settings.api_replicas, replicas
    assert all(version in name for name in replicas), replicas
    with httpx.Client(base_url=status.endpoints.edge_url, timeout=5) as edge:  # type: ignore[union-attr]
        assert {edge.get("/version").json()["version"] for _ in range(10)} == {version}


def _release_parameters(version: str) -> dict[str, Any]:
    return {
        "env": "local",
        "version": version,
        "provision_infra": False,
        "configure_nodes": False,
        "take_backup": False,
    }


def test_a_deploy_survives_losing_an_api_server_and_a_database_restart(
    control_plane: dict[str, Any],
) -> None:
    """The control plane's drills, on a rolling deploy (the shortest release that changes what
    serves): an API server killed mid-deploy (clients go on through the balancer, no request
    fails) and its PostgreSQL restarted (the run reconnects, or fails cleanly and a rerun ends
    in the same state)."""
    from socialnet_ops.control.control_plane import _supervisor

    version = f"drill-{secrets.token_hex(3)}"
    platform = LocalPlatform(load_environment("local"))
    supervisor = _supervisor()
    with api(control_plane) as client:
        run_id = _start(client, "deploy/deploy-local", {"env": "local", "version": version})
        wait_for(
            lambda: any(version in p.name for p in platform.status().programs),
            240,
            "the deploy's replicas",
            interval_s=0.5,
        )
        server = supervisor.process("prefect-api-1")
        assert server and server["pid"]
        os.kill(server["pid"], signal.SIGKILL)
        failed = 0
        for _ in range(50):  # 10 s of reads through the balancer while one server is gone
            try:
                failed += client.get(f"/flow_runs/{run_id}").status_code >= 500
            except httpx.HTTPError:
                failed += 1
            time.sleep(0.2)
        assert failed == 0, f"{failed} of 50 requests failed while an API server was down"
        supervisor.restart("control-postgres")
        state = _wait_state(client, run_id, {"COMPLETED", "FAILED", "CRASHED"}, 420)
        if state != "COMPLETED":
            # Failed cleanly: the rerun (the UI's Retry) takes it to the same end.
            client.post(
                f"/flow_runs/{run_id}/set_state",
                json={"state": {"type": "SCHEDULED", "name": "AwaitingRetry"}, "force": True},
            ).raise_for_status()
            state = _wait_state(client, run_id, {"COMPLETED", "FAILED", "CRASHED"}, 420)
        final = client.get(f"/flow_runs/{run_id}").json()["state"]
        assert state == "COMPLETED", f"{final['type']}: {final['message']}"
        assert supervisor.processes()["prefect-api-1"]["statename"] == "RUNNING"
    status = platform.status()
    assert (status.stable_version, status.canary_version) == (version, None)


def test_a_failing_rollback_never_starts_another_and_is_alerted_once(
    control_plane: dict[str, Any],
) -> None:
    """The storm drill: a deploy that changed `local` failed (the event its failure hook sends),
    the automation starts one rollback, and that rollback fails too (the front is down, so its
    smoke test fails). Before the fix its failure emitted `socialnet.release.failed` again and
    started the next rollback, without end."""
    platform = LocalPlatform(load_environment("local"))
    assert platform.status().stable_version, "the drill needs a recorded release (test above)"
    since = time.time()
    with api(control_plane) as client:
        rollbacks_before = {run["id"] for run in _runs_of(client, "rollback/rollback-local")}
        platform.supervisor.call("stopProcess", "front", True)
        try:
            client.post(
                "/events",
                json=[
                    {
                        "id": str(uuid.uuid4()),
                        "occurred": datetime.now(UTC).isoformat(),
                        "event": "socialnet.release.failed",
                        "resource": {
                            "prefect.resource.id": "socialnet.environment.local",
                            "socialnet.environment": "local",
                            "socialnet.rollback": "requested",
                        },
                        "payload": {"environment": "local", "reason": "drill"},
                    }
                ],
            ).raise_for_status()
            deadline = time.monotonic() + 60
            started: list[dict[str, Any]] = []
            while time.monotonic() < deadline and not started:
                started = [
                    run
                    for run in _runs_of(client, "rollback/rollback-local")
                    if run["id"] not in rollbacks_before
                ]
                time.sleep(1)
            assert len(started) == 1, "the automation did not start the rollback"
            assert started[0]["parameters"]["to_recorded_stable"] is True
            assert _wait_state(client, started[0]["id"], {"FAILED", "COMPLETED"}, 180) == "FAILED"
        finally:
            platform.supervisor.call("startProcess", "front", True)
        time.sleep(AUTOMATION_QUIET_SECONDS)
        assert len(_runs_of(client, "rollback/rollback-local")) == len(rollbacks_before) + 1
        assert len(_events(client, "socialnet.rollback.failed", since)) == 1
    alerts = _alerts_with_subject("Rollback problem in local", timeout=60)
    assert len(alerts) == 1, alerts
    assert alerts[0]["body"].startswith("socialnet.rollback.failed: ")


def test_without_redis_reads_work_writes_fail_and_automations_act_again(
    control_plane: dict[str, Any],
) -> None:
    supervisor = plane._supervisor()
    services = supervisor.process("prefect-services")
    assert services is not None
    supervisor.call("stopProcess", "redis", True)
    try:
        with api(control_plane) as client:
            # What keeps working: reading (the UI's pages, `status`), from PostgreSQL.
            assert client.post("/flow_runs/filter", json={"limit": 5}).status_code == 200
            # What stops: writes that publish events (new flows and runs, state changes).
            created = client.post("/flows/", json={"name": f"no-redis-{secrets.token_hex(3)}"})
            assert created.status_code >= 500
    finally:
        supervisor.call("startProcess", "redis", True)
    # It recovers by itself when Redis returns: no program restarted.
    with api(control_plane) as client:

        def accepted() -> bool:
            flow = client.post("/flows/", json={"name": f"redis-back-{secrets.token_hex(3)}"})
            return flow.status_code in {200, 201}

        wait_for(accepted, 60, "writes after Redis returned", interval_s=1)
        assert run_probe(client, "after-redis") == "COMPLETED"
    # The services' background worker does not reconnect: the listener restarted the services,
    # so the automations of the drills below (alert, rollback, zombie) still act.
    restarted = supervisor.process("prefect-services")
    assert restarted is not None and restarted["pid"] != services["pid"]
    assert restarted["statename"] == "RUNNING"
    watch_log = control_plane["folder"] / "logs" / "redis-watch.log"
    assert "prefect-services restarted" in watch_log.read_text()
    # And an automation acts again: a failed backup's alert reaches the inbox.
    started = time.time()
    moto = LocalPlatform(load_environment("local")).supervisor
    moto.call("stopProcess", "moto", True)
    try:
        assert cli("backup", "--env", "local", check=False).returncode != 0
    finally:
        moto.call("startProcess", "moto", True)
    alerts = _alerts_with_subject("Backup problem in local", timeout=90, since=started)
    assert alerts, "no alert arrived within 90 s after Redis returned: automations stopped"


def test_the_control_planes_database_is_backed_up_and_restores_with_the_ledgers(
    control_plane: dict[str, Any],
) -> None:
    """After the releases above: the dump holds every run and the ledgers (Prefect variables),
    read by a role that can change nothing, and restores into a fresh database as it was."""
    taken = json.loads(cli("backup", "--env", "local", "--control-plane", "--json").stdout)
    assert taken["environment"] == "control-plane"
    assert taken["key"].startswith("backups/control-plane/prefect/")
    assert taken["row_counts"]["public.flow_run"] > 0 and taken["row_counts"]["public.variable"] > 0
    access = json.loads(control_plane_backup_access().read_text())
    assert stat.S_IMODE(control_plane_backup_access().stat().st_mode) == 0o600
    with (
        psycopg.connect(
            host="127.0.0.1",
            port=access["port"],
            user=access["user"],
            dbname="prefect",
            password=read_secret(Path(access["password_file"])),
        ) as reader,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        reader.execute("DELETE FROM variable")  # fmt: skip
    # A fresh database of the control plane's cluster, restored as the superuser would.
    stack = plane.stack()
    superuser = DatabaseAccess(
        host=str(stack.pgsocket), port=access["port"], user="postgres", database="prefect"
    )
    target = control_plane_backup_target(load_environment("local")).model_copy(
        update={"database": superuser}
    )
    restored = restore_dump_into(
        target, taken["backup_id"], "prefect_restored", False, log=logging.getLogger("test")
    )
    try:
        assert restored["rows"] == sum(taken["row_counts"].values())
        ledger_query = "SELECT value FROM variable WHERE name = 'ledger-local'"
        with psycopg.connect(**superuser.connect_kwargs("prefect_restored")) as copy:
            kept = copy.execute(ledger_query).fetchone()
        with psycopg.connect(**superuser.connect_kwargs()) as live:
            now = live.execute(ledger_query).fetchone()
        assert kept is not None and kept == now
        assert "stable" in json.dumps(kept[0])
    finally:
        drop_restored_database(target, "prefect_restored")


def test_history_stays_over_down_and_up(control_plane: dict[str, Any]) -> None:
    """Last: the control plane goes down and comes up again (the local platform keeps running)."""
    with api(control_plane) as client:
        before = len(client.post("/flow_runs/filter", json={}).json())
    plane.down()
    assert plane.control_plane_status()["state"] == "stopped"
    again = cli("up", "--env", "local")
    assert "copied to PostgreSQL" not in again.stdout
    assert "deployments unchanged" in again.stdout
    with api(control_plane) as client:
        runs = client.post("/flow_runs/filter", json={}).json()
        assert len(runs) >= before
        assert control_plane["seeded"] in {run["name"] for run in runs}
        assert run_probe(client, "after-up") == "COMPLETED"
