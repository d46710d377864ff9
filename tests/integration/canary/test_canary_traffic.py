"""Who and what reaches the canary, through the real edge and replicas (one file: one platform).

- Header, cookie and sticky routing (release.traffic): the canary is the stable build under
  another version (what `/version` answers), started and weighted by the platform itself.
- Flagger-style hooks, by the canary flow: pre-rollout tests against the canary's own address, a
  load test that gives a quiet service a verdict, a confirmation URL, the post-rollout call.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prefect.blocks.notifications import CustomWebhookNotificationBlock

from flows.canary import CanaryAbortedError, canary
from socialnet_ops.core.environments import load_environment
from socialnet_ops.platforms.base import Build, PlatformError
from socialnet_ops.platforms.local import LocalPlatform
from tasks.hooks import ALERT_BLOCK
from tasks.ledger import load_ledger
from tests.integration.canary.conftest import ENV, release, write_environment
from tests.integration.canary.traffic import UserTraffic

pytestmark = pytest.mark.integration

STEPS: list[dict[str, Any]] = [
    {"set_weight": 50},
    {"analysis": {"duration": "10s"}},
    {"set_weight": 100},
]
HEADER = {"X-Canary": "always"}


def with_traffic(catalog: Path, **traffic: Any) -> LocalPlatform:
    """The canary-it policy with `traffic`, and a platform that reads it."""
    write_environment(catalog, STEPS)
    path = catalog / f"{ENV}.yaml"
    document = yaml.safe_load(path.read_text())
    document["release"]["traffic"] = traffic
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return LocalPlatform(load_environment(ENV))


def canary_build(platform: LocalPlatform, name: str) -> Build:
    stable = platform.store.load().stable.build
    assert stable is not None
    return dataclasses.replace(stable.to_build(), version=release(name))


def versions(
    platform: LocalPlatform,
    count: int,
    client: httpx.Client | None = None,
    headers: dict[str, str] | None = None,
    cookies: dict[str, str] | None = None,
) -> list[str]:
    """`/version` `count` times over one client (its cookies kept); the versions answered."""
    own = client is None
    client = client or httpx.Client(
        base_url=platform.endpoints().edge_url, timeout=5, cookies=cookies
    )
    try:
        return [client.get("/version", headers=headers).json()["version"] for _ in range(count)]
    finally:
        if own:
            client.close()


@pytest.fixture
def traffic_catalog(catalog: Path, canary_platform: LocalPlatform) -> Iterator[Path]:
    yield catalog
    LocalPlatform(load_environment(ENV)).abort_canary()
    write_environment(catalog, STEPS)


def test_testers_reach_the_canary_at_weight_0_and_sticky_users_keep_their_track(
    traffic_catalog: Path, canary_platform: LocalPlatform
) -> None:
    platform = with_traffic(
        traffic_catalog, header="X-Canary", cookie="socialnet-canary", sticky=True
    )
    stable = platform.status().stable_version
    canary = canary_build(platform, "routed")
    platform.start_canary(canary)
    assert platform.status().canary_weight == 0

    assert set(versions(platform, 10, headers=HEADER)) == {canary.version}
    assert set(versions(platform, 10, cookies={"socialnet-canary": "always"})) == {canary.version}
    assert set(versions(platform, 10, headers={"X-Canary": "yes"})) == {stable}
    assert set(versions(platform, 40)) == {stable}

    platform.set_canary_weight(50)
    # cookie=never keeps a tester on stable whatever the weight.
    assert set(versions(platform, 20, cookies={"socialnet-canary": "never"})) == {stable}
    kept: dict[str, list[str]] = {}
    for _ in range(40):
        with httpx.Client(base_url=platform.endpoints().edge_url, timeout=5) as client:
            first = versions(platform, 1, client)[0]
            if first in kept:
                continue
            assert client.cookies.get("socialnet-track"), "no sticky cookie was set"
            kept[first] = versions(platform, 20, client)
        if len(kept) == 2:
            break
    assert kept.keys() == {stable, canary.version}, kept
    for first, answers in kept.items():
        assert set(answers) == {first}, f"a user first served by {first} moved: {answers}"

    platform.abort_canary()
    assert set(versions(platform, 10, headers=HEADER)) == {stable}


def test_ab_mode_sends_only_header_and_cookie_requests_to_the_canary(
    traffic_catalog: Path, canary_platform: LocalPlatform
) -> None:
    platform = with_traffic(
        traffic_catalog, mode="ab", header="X-Canary", cookie="socialnet-canary"
    )
    stable = platform.status().stable_version
    canary = canary_build(platform, "ab")
    platform.start_canary(canary)
    platform.set_canary_weight(50)
    assert platform.status().canary_weight == 0  # users get no share in ab

    assert set(versions(platform, 60)) == {stable}
    assert set(versions(platform, 10, headers=HEADER)) == {canary.version}
    assert set(versions(platform, 10, cookies={"socialnet-canary": "always"})) == {canary.version}


def test_a_header_the_running_edge_does_not_route_by_is_refused_before_any_change(
    traffic_catalog: Path, canary_platform: LocalPlatform
) -> None:
    platform = with_traffic(traffic_catalog, header="X-Tester")
    with pytest.raises(
        PlatformError, match=r"release\.traffic \(header X-Tester.*socialnet-ops up --env canary-it"
    ):
        platform.start_canary(canary_build(platform, "renamed"))
    assert platform.status().canary_version is None


# --- hooks as steps -------------------------------------------------------------------------------

UNTESTED = release("untested")
QUIET_LOADED = release("quiet-loaded")


class HookServer:
    """A local hook endpoint: answers each POST path from a script, records the payloads."""

    def __init__(self, answers: dict[str, list[int]]) -> None:
        self.answers = answers
        self.received: list[tuple[str, dict[str, Any]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.received.append((self.path, body))
                script = server.answers.get(self.path, [404])
                status = script.pop(0) if len(script) > 1 else script[0]
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"not yet")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def payloads(self, path: str) -> list[dict[str, Any]]:
        return [body for received, body in self.received if received == path]


@pytest.fixture
def hook_server() -> Iterator[Callable[[dict[str, list[int]]], HookServer]]:
    servers: list[HookServer] = []

    def start(answers: dict[str, list[int]]) -> HookServer:
        servers.append(HookServer(answers))
        return servers[-1]

    yield start
    for server in servers:
        server.httpd.shutdown()


def test_failing_pre_rollout_tests_abort_before_any_user_reaches_the_canary(
    canary_platform: LocalPlatform, release_policy: Callable[..., None], tmp_path: Path
) -> None:
    seen = tmp_path / "seen.json"
    # The test suite reaches the canary's own replica, reads its version, then fails.
    suite = (
        "import json, os, sys, urllib.request; "
        "body = urllib.request.urlopen(os.environ['CANARY_URL'] + '/version').read(); "
        f"open({str(seen)!r}, 'wb').write(body); "
        "print('test_feed: expected 200, got 500'); sys.exit(1)"
    )
    release_policy(
        [
            {"pre_rollout": {"command": [sys.executable, "-c", suite], "timeout": "30s"}},
            {"set_weight": 50},
            {"analysis": {"duration": "10s"}},
            {"set_weight": 100},
        ]
    )
    edge = canary_platform.endpoints().edge_url
    with (
        UserTraffic(edge, rate=10, workers=2, max_seconds=120) as traffic,
        pytest.raises(CanaryAbortedError) as aborted,
    ):
        canary(env=ENV, version=UNTESTED)
    details = aborted.value.details
    assert details.reason == (
        f"pre-rollout tests failed: {sys.executable} exited 1: test_feed: expected 200, got 500"
    )
    assert (details.step, details.weight, details.measurements) == (1, 0, 0)
    assert json.loads(seen.read_text())["version"] == UNTESTED
    assert traffic.report.total > 0
    assert traffic.report.tracks()["canary"] == 0, "a user reached the untested canary"
    assert canary_platform.status().canary_version is None


def test_a_quiet_service_is_judged_on_its_load_test_and_hooks_confirm_and_report(
    canary_platform: LocalPlatform,
    release_policy: Callable[..., None],
    hook_server: Callable[[dict[str, list[int]]], HookServer],
) -> None:
    hooks = hook_server(
        {"/tests": [200], "/confirm": [503, 503, 200], "/done": [200], "/alerts": [200]}
    )
    # The alert block the control plane registers, here pointed at the hook server.
    CustomWebhookNotificationBlock(
        name=ALERT_BLOCK,
        url=f"{hooks.url}/alerts",
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
    ).save(ALERT_BLOCK, overwrite=True)
    release_policy(
        [
            {"pre_rollout": {"url": f"{hooks.url}/tests"}},
            {"set_weight": 20},
            {"load_test": {"rate": 8, "duration": "2m"}},
            {"analysis": {"duration": "10s"}},
            {"confirm_promotion": {"url": f"{hooks.url}/confirm", "interval": "1s"}},
            {"set_weight": 100},
            {"post_rollout": {"notify": True, "url": f"{hooks.url}/done"}},
        ]
    )
    # No user traffic at all: without the load test this canary would end inconclusive.
    result = canary(env=ENV, version=QUIET_LOADED)
    assert result.outcome == "promoted", result.reason
    assert result.verdicts.get("pass", 0) >= 1 and "inconclusive" not in result.verdicts
    assert canary_platform.status().stable_version == QUIET_LOADED

    (tests,) = hooks.payloads("/tests")
    assert tests["phase"] == "pre-rollout"
    assert tests["metadata"]["CANARY_VERSION"] == QUIET_LOADED
    assert tests["metadata"]["CANARY_URL"].startswith("http://127.0.0.1:")
    asked = hooks.payloads("/confirm")
    assert len(asked) == 3 and {body["phase"] for body in asked} == {"confirm-promotion"}
    (done,) = hooks.payloads("/done")
    assert (done["phase"], done["metadata"]["outcome"]) == ("post-rollout", "promoted")
    (alert,) = hooks.payloads("/alerts")
    assert alert["subject"] == f"canary {QUIET_LOADED} promoted on {ENV}"


# --- blue-green -----------------------------------------------------------------------------------

BLUE_GREEN_BAD = release("bg-bad")
BLUE_GREEN_GOOD = release("bg-good")


def with_blue_green(catalog: Path, **spec: Any) -> None:
    """The canary-it environment released blue-green (its analysis as the canary tests')."""
    write_environment(catalog, STEPS)
    path = catalog / f"{ENV}.yaml"
    document = yaml.safe_load(path.read_text())
    document["release"].update(
        {
            "strategy": "blue_green",
            "steps": [],
            "blue_green": {
                "pre_promotion_analysis": {"duration": "10s"},
                "post_promotion_analysis": {"duration": "10s"},
                "scale_down_delay": "5s",
                "preview_load": {"rate": 15},
                **spec,
            },
        }
    )
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def test_blue_green_judges_the_preview_before_any_user_then_switches_everyone_at_once(
    canary_platform: LocalPlatform, release_policy: Callable[..., None], catalog: Path
) -> None:
    edge = canary_platform.endpoints().edge_url
    with_blue_green(catalog)
    # A bad build: judged on the preview's load test, aborted, and no user ever reached it.
    with (
        UserTraffic(edge, rate=10, workers=2, max_seconds=120) as bad_traffic,
        pytest.raises(CanaryAbortedError) as aborted,
    ):
        canary(env=ENV, version=BLUE_GREEN_BAD, settings={"SOCIALNET_FAULT_ERROR_RATE": "0.3"})
    details = aborted.value.details
    assert (details.step, details.weight) == (2, 0), details.reason
    assert "above the policy's 5.0%" in details.reason
    assert bad_traffic.report.tracks()["canary"] == 0, "a user reached the failing preview"
    assert bad_traffic.report.failed() == 0

    # A good build: the switch sends every user to it at once, the old one stays up during the
    # post-promotion analysis and the scale-down delay, then the new one is stable.
    with UserTraffic(edge, rate=10, workers=2, max_seconds=180) as traffic:
        result = canary(env=ENV, version=BLUE_GREEN_GOOD)
    assert result.outcome == "promoted", result.reason
    assert result.verdicts.get("pass", 0) >= 4 and "fail" not in result.verdicts
    answers = sorted(traffic.report.answers, key=lambda answer: answer.at)
    assert traffic.report.failed() == 0
    on_green = [index for index, answer in enumerate(answers) if answer.track == "canary"]
    assert on_green, "no user reached the new release during the post-promotion analysis"
    # One switch: between the first and the last user answered by the new release, nobody was
    # answered by the old one (no split of users as in a canary).
    between = answers[on_green[0] : on_green[-1] + 1]
    assert [answer.track for answer in between].count("stable") == 0
    assert answers[0].track == "stable"
    status = canary_platform.status()
    assert (status.stable_version, status.canary_version) == (BLUE_GREEN_GOOD, None)
    ledger = load_ledger(ENV)
    assert ledger.stable is not None and ledger.stable.strategy == "blue_green"
