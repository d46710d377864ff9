"""The edge's canary routing (release.traffic): the rules the local platform writes for a policy,
and the rendered haproxy.cfg with them, checked by `haproxy -c`."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from socialnet_ops.core.environments import TrafficPolicy, load_environment
from socialnet_ops.platforms.local import LocalPlatform
from socialnet_ops.platforms.local.haproxy import TrafficRules, slot_backends
from socialnet_ops.platforms.local.state import PlatformState
from socialnet_ops.platforms.local.tools import ensure_tls_pem, s3_tls_config
from tests.support.requirements import unavailable

pytestmark = pytest.mark.unit


def platform_with(**policy: Any) -> LocalPlatform:
    environment = load_environment("local")
    release = environment.release.model_copy(update={"traffic": TrafficPolicy(**policy)})
    return LocalPlatform(environment.model_copy(update={"release": release}))


def test_no_policy_routes_nothing_by_request() -> None:
    rules = platform_with()._traffic_rules("1.3.0", 50)
    assert all(lines == [] for lines in rules.files().values())
    assert platform_with()._user_weight(50) == 50


def test_header_and_cookie_patterns_follow_the_policy() -> None:
    files = platform_with(header="X-Canary", header_value="qa", cookie="beta")._traffic_rules(
        None, 0
    )
    assert files.files()["canary-header.acl"] == ["qa"]
    assert files.files()["canary-cookie.acl"] == ["always"]
    assert files.files()["canary-never.acl"] == ["never"]


def test_sticky_pins_name_the_canary_and_pin_stable_only_once_it_has_a_share() -> None:
    platform = platform_with(sticky=True)
    at_zero = platform._traffic_rules("1.3.0+build/7", 0).files()
    assert at_zero["tracks.map"] == ["canary canary-1.3.0_build_7"]
    assert at_zero["pins.map"] == ["canary-1.3.0_build_7 canary"]
    at_ten = platform._traffic_rules("1.3.0", 10).files()
    assert at_ten["pins.map"] == ["canary-1.3.0 canary", "stable-1.3.0 stable"]
    # No canary: no pin matches, pinned users go back to the weighted split.
    assert platform._traffic_rules(None, 0).files()["pins.map"] == []


def test_ab_mode_gives_users_no_weight() -> None:
    assert platform_with(mode="ab", header="X-Canary")._user_weight(50) == 0


def test_slots_live_in_the_weighted_backend_and_their_tracks() -> None:
    assert slot_backends("canary3") == ("api", "api_canary")
    assert slot_backends("stable12") == ("api", "api_stable")


def test_the_rendered_edge_is_valid_haproxy(tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        unavailable("haproxy is not installed (apt-get install haproxy)")
    platform = platform_with(header="X-Tester", cookie="beta", sticky=True)
    platform.state_dir = tmp_path
    (tmp_path / "haproxy").mkdir()
    for name in TrafficRules().files():
        (tmp_path / "haproxy" / name).write_text("")
    ports = dict(zip(("edge", "exporter", "front"), (18080, 18081, 18082), strict=True))
    text = platform._haproxy_cfg(PlatformState(environment="local", ports=ports))
    assert "req.hdr(X-Tester)" in text and "req.cook(beta)" in text
    config = tmp_path / "haproxy" / "haproxy.cfg"
    config.write_text(text)
    check = subprocess.run(
        [haproxy, "-c", "-q", "-f", str(config)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr


def test_the_tls_front_of_the_aws_emulator_is_valid_haproxy(tmp_path: Path) -> None:
    """pgBackRest's way to the emulator: TLS on its own port, plain HTTP to the emulator."""
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        unavailable("haproxy is not installed (apt-get install haproxy)")
    if shutil.which("openssl") is None:
        unavailable("openssl is not installed (apt-get install openssl)")
    pem = tmp_path / "s3-tls.pem"
    assert ensure_tls_pem(pem) and not ensure_tls_pem(pem)  # made once, then kept
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600  # it holds the private key
    text = s3_tls_config("local", 18083, pem, 18084)
    assert f"bind 127.0.0.1:18083 ssl crt {pem}" in text and "server moto 127.0.0.1:18084" in text
    config = tmp_path / "s3-tls.cfg"
    config.write_text(text)
    check = subprocess.run(
        [haproxy, "-c", "-q", "-f", str(config)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr
