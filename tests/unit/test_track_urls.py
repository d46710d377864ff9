"""Where the control plane reaches each track past the edge (pre-rollout tests, load tests)."""

from __future__ import annotations

from typing import Any

import pytest

from socialnet_ops.core.environments import load_environment
from socialnet_ops.platforms.kubernetes import KubernetesPlatform

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("values", "canary_runs"),
    [({"canary": {"enabled": True, "weight": 0}}, True), ({"canary": {"enabled": False}}, False)],
)
def test_kubernetes_tracks_are_their_services_and_a_stopped_canary_has_none(
    monkeypatch: pytest.MonkeyPatch, values: dict[str, Any], canary_runs: bool
) -> None:
    platform = KubernetesPlatform(load_environment("staging"))
    monkeypatch.setattr(platform, "_release_values", lambda: values)
    names = platform.names()
    namespace = platform.settings.namespace
    assert platform.track_urls("stable") == [f"http://{names['api']}.{namespace}.svc"]
    expected = [f"http://{names['canary']}.{namespace}.svc"] if canary_runs else []
    assert platform.track_urls("canary") == expected
