"""The local platform against the real tools and the real API app.

The tests share one platform (starting it takes seconds) and run in file order; each one first
brings the platform to the state it needs (deploy is idempotent), so any of them runs alone too.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from socialnet_ops.platforms.base import Build, PlatformError, ReplicaNotReadyError
from socialnet_ops.platforms.local import LocalPlatform
from socialnet_ops.platforms.local.state import StateStore
from tests.integration.platform.conftest import SteadyLoad, platform_environment

pytestmark = pytest.mark.integration

BASE_PROGRAMS = {
    "postgres", "haproxy", "prometheus", "moto", "openbao", "front", "s3tls", "pushgateway",
}  # fmt: skip


def edge_versions(platform: LocalPlatform, requests: int) -> Counter[tuple[str, str]]:
    """(version, track) of `requests` answers of the edge's /version."""
    seen: Counter[tuple[str, str]] = Counter()
    with httpx.Client(base_url=platform.endpoints().edge_url, timeout=10) as client:
        for _ in range(requests):
            response = client.get("/version")
            assert response.status_code == 200, response.text
            body = response.json()
            seen[(body["version"], body["track"])] += 1
    return seen


def api_programs(platform: LocalPlatform) -> dict[str, str]:
    return {p.name: p.state for p in platform.status().programs if p.name.startswith("api-")}


def test_start_is_idempotent(platform: LocalPlatform) -> None:
    before = StateStore(platform.state_dir, platform.environment).load()
    pids = {name: info["pid"] for name, info in platform.supervisor.processes().items()}

    platform.start()

    after = StateStore(platform.state_dir, platform.environment).load()
    assert after.ports == before.ports
    assert {name: info["pid"] for name, info in platform.supervisor.processes().items()} == pids


def test_every_program_runs_and_answers(platform: LocalPlatform) -> None:
    status = platform.status()
    states = {program.name: program.state for program in status.programs}
    assert set(states) >= BASE_PROGRAMS
    assert all(states[name] == "RUNNING" for name in BASE_PROGRAMS), states

    endpoints = platform.endpoints()
    with httpx.Client(timeout=5) as client:
        assert client.get(f"{endpoints.prometheus_url}/-/ready").status_code == 200
        # No remote shutdown or reload: nothing here needs Prometheus's lifecycle API.
        assert client.post(f"{endpoints.prometheus_url}/-/quit").status_code == 403
        assert client.get(f"{endpoints.prometheus_url}/-/ready").status_code == 200
        assert client.get(f"{endpoints.edge_url}/").status_code == 200  # the front
        assert client.get(endpoints.extra["haproxy_exporter_url"]).status_code == 200
        assert client.get(f"{endpoints.extra['vault_address']}/v1/sys/health").status_code == 200
        assert client.get(f"{endpoints.extra['aws_endpoint_url']}/moto-api/").status_code == 200
    for port in [
        endpoints.database_port,
        *json.loads(platform.store.path.read_text())["ports"].values(),
    ]:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass


def test_deploy_replaces_stable_without_a_failed_request(
    platform: LocalPlatform, releases: Callable[..., Build]
) -> None:
    platform.deploy(releases("1.0.0"))
    assert set(edge_versions(platform, 10)) == {("1.0.0", "stable")}

    started = time.monotonic()
    with SteadyLoad(platform.endpoints().edge_url) as load:
        platform.deploy(releases("2.0.0"))
        time.sleep(1)
    print(f"deploy 2.0.0 under load took {time.monotonic() - started:.1f} s, {load.report}")

    assert load.report.failures == []
    assert load.report.total > 50
    assert set(edge_versions(platform, 10)) == {("2.0.0", "stable")}
    names = api_programs(platform)
    assert len(names) == 2 and all("2_0_0" in name for name in names), names
    assert platform.status().stable_version == "2.0.0"

    platform.deploy(releases("2.0.0"))  # idempotent: the same replicas stay
    assert api_programs(platform) == names


def test_a_build_that_never_gets_ready_leaves_the_old_one_serving(
    platform: LocalPlatform, releases: Callable[..., Build]
) -> None:
    platform.deploy(releases("2.0.0"))
    # The database port of this build is wrong on purpose: /readyz stays 503.
    broken = releases("9.9.9", runtime_env={"SOCIALNET_DB_PORT": "1"})

    with (
        SteadyLoad(platform.endpoints().edge_url) as load,
        pytest.raises(ReplicaNotReadyError) as error,
    ):
        platform.deploy(broken)

    assert "9_9_9" in str(error.value) and "/readyz" in str(error.value)
    assert load.report.failures == []
    assert set(load.report.answers) == {"2.0.0"}
    assert not [name for name in api_programs(platform) if "9_9_9" in name]
    assert platform.status().stable_version == "2.0.0"
    assert not [
        path for path in (platform.state_dir / "programs").iterdir() if "9_9_9" in path.name
    ]


def test_a_crashed_replica_is_restarted_and_reported(
    platform: LocalPlatform, releases: Callable[..., Build]
) -> None:
    platform.deploy(releases("2.0.0"))
    name = sorted(api_programs(platform))[0]
    pid = platform.supervisor.process(name)["pid"]  # type: ignore[index]

    os.kill(pid, signal.SIGKILL)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        program = next(p for p in platform.status().programs if p.name == name)
        info = platform.supervisor.process(name)
        if program.restarts >= 1 and info and info["statename"] == "RUNNING" and info["pid"] != pid:
            break
        time.sleep(0.3)
    else:
        pytest.fail(f"{name} not restarted and reported within 30 s: {program}")
    assert program.restarts == 1
    # Back in the rotation once ready again: every answer comes from 2.0.0.
    deadline = time.monotonic() + 30
    while "UP" not in program.detail and time.monotonic() < deadline:
        time.sleep(0.5)
        program = next(p for p in platform.status().programs if p.name == name)
    assert set(edge_versions(platform, 10)) == {("2.0.0", "stable")}


def test_a_restarted_edge_resumes_its_servers(
    platform: LocalPlatform, releases: Callable[..., Build]
) -> None:
    platform.deploy(releases("2.0.0"))
    pid = platform.supervisor.process("haproxy")["pid"]  # type: ignore[index]

    os.kill(pid, signal.SIGKILL)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = platform.supervisor.process("haproxy")
        if info and info["statename"] == "RUNNING" and info["pid"] != pid:
            try:
                if httpx.get(f"{platform.endpoints().edge_url}/version", timeout=2).is_success:
                    break
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    else:
        pytest.fail("HAProxy did not come back serving the API within 30 s")
    assert set(edge_versions(platform, 10)) == {("2.0.0", "stable")}
    haproxy = next(p for p in platform.status().programs if p.name == "haproxy")
    assert haproxy.restarts == 1


def test_canary_weight_splits_traffic_and_abort_returns_all_to_stable(
    platform: LocalPlatform, releases: Callable[..., Build]
) -> None:
    platform.deploy(releases("2.0.0"))
    platform.start_canary(releases("3.0.0"))
    status = platform.status()
    assert (status.canary_version, status.canary_weight) == ("3.0.0", 0)
    assert set(edge_versions(platform, 20)) == {("2.0.0", "stable")}

    platform.set_canary_weight(25)
    seen = edge_versions(platform, 400)
    canary_share = seen[("3.0.0", "canary")] / 400
    print(f"canary at 25 %: {seen}")
    assert abs(canary_share - 0.25) <= 0.05, seen
    assert set(seen) == {("2.0.0", "stable"), ("3.0.0", "canary")}

    with SteadyLoad(platform.endpoints().edge_url) as load:
        platform.abort_canary()
        time.sleep(0.5)
    assert load.report.failures == []
    assert set(edge_versions(platform, 20)) == {("2.0.0", "stable")}
    status = platform.status()
    assert (status.canary_version, status.canary_weight) == (None, 0)
    assert not [name for name in api_programs(platform) if "canary" in name]
    platform.abort_canary()  # idempotent


def test_promote_makes_the_canary_stable_without_a_failed_request(
    platform: LocalPlatform, releases: Callable[..., Build]
) -> None:
    platform.deploy(releases("2.0.0"))
    platform.start_canary(releases("3.0.0"))
    platform.set_canary_weight(50)

    with SteadyLoad(platform.endpoints().edge_url) as load:
        platform.promote_canary()
        time.sleep(1)

    assert load.report.failures == []
    assert set(edge_versions(platform, 20)) == {("3.0.0", "stable")}
    status = platform.status()
    assert (status.stable_version, status.canary_version, status.canary_weight) == (
        "3.0.0",
        None,
        0,
    )
    names = api_programs(platform)
    assert len(names) == 2 and all(name.startswith("api-stable-3_0_0") for name in names), names


def test_prometheus_scrapes_the_edge_and_every_replica(platform: LocalPlatform) -> None:
    prometheus = platform.endpoints().prometheus_url
    replicas = {p.name for p in platform.status().programs if p.name.startswith("api-")}
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=5) as client:
        while True:
            result = client.get(f"{prometheus}/api/v1/query", params={"query": "up == 1"}).json()
            series = [item["metric"] for item in result["data"]["result"]]
            scraped = {m.get("program") for m in series if m.get("job") == "api"}
            if "edge" in {m.get("job") for m in series} and replicas <= scraped:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"Prometheus does not scrape {replicas - scraped} / edge: {series}")
            time.sleep(1)
    assert all(m.get("track") in {"stable", "canary"} for m in series if m.get("job") == "api")


def test_a_port_in_use_is_a_clear_error(platform_state_root: object) -> None:
    other = LocalPlatform(platform_environment("platform-busy"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        store = StateStore(other.state_dir, other.environment)
        state = store.load()
        state.ports = {"postgres": port}
        other.state_dir.mkdir(parents=True, exist_ok=True)
        store.save(state)

        with pytest.raises(PlatformError, match=rf"port {port} \(for postgres\).*in use"):
            other.start()
    assert not other.is_running()


def test_stop_is_idempotent_and_start_restores_the_release(platform: LocalPlatform) -> None:
    stable = platform.status().stable_version
    ports = platform.store.load().ports

    platform.stop()
    platform.stop()

    assert not platform.is_running()
    assert platform.status().running is False
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{platform.endpoints().edge_url}/version", timeout=2)

    platform.start()
    assert platform.store.load().ports == ports
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{platform.endpoints().edge_url}/version", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    assert set(edge_versions(platform, 10)) == {(stable, "stable")}
