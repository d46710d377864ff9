"""Header, cookie and sticky routing to the canary (release.traffic) through the real edge.

The canary is the stable build under another version (what `/version` answers), started and
weighted by the platform itself: the flow's steps add nothing to the routing checked here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from socialnet_ops.core.environments import load_environment
from socialnet_ops.platforms.base import Build, PlatformError
from socialnet_ops.platforms.local import LocalPlatform
from tests.integration.canary.conftest import ENV, release, write_environment

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
