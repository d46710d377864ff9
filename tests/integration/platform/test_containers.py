"""The local platform runs a build's images as podman containers, pulled by digest from its registry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from socialnet_ops.adapters import images
from socialnet_ops.adapters.builds import build_release
from socialnet_ops.core.paths import repo_root
from socialnet_ops.core.release import SourceTree
from socialnet_ops.platforms.base import Build, PlatformError, ReplicaNotReadyError
from socialnet_ops.platforms.local import LocalPlatform
from tests.integration.platform.conftest import SteadyLoad
from tests.integration.platform.test_local_platform import api_programs, edge_versions
from tests.support.registry import require_containers
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def image_builds(platform: LocalPlatform) -> Callable[..., Build]:
    """Builds of the working tree with images, pushed to the platform's registry (once each)."""
    require_containers()
    registry = platform.image_registry()
    assert registry is not None, platform.status().runtime
    source = SourceTree(root=repo_root(), sha=None, ref="worktree", url=str(repo_root()))

    def make(version: str, runtime_env: dict[str, str] | None = None) -> Build:
        build, _ = build_release(platform.environment, version, source, runtime_env, registry)
        return build

    return make


def containers(platform: LocalPlatform) -> dict[str, str]:
    """name -> image of the environment's running containers."""
    engine = images.ContainerEngine()
    listing = engine.output(
        "podman", "ps", "--filter", f"label=socialnet.instance={platform.runtime.instance}",
        "--format", "json",
    )  # fmt: skip
    return {entry["Names"][0]: entry["Image"] for entry in json.loads(listing or "[]")}


def test_a_release_runs_as_containers_of_its_images(
    platform: LocalPlatform, image_builds: Callable[..., Build]
) -> None:
    build = image_builds("c1.0.0")
    assert set(build.images) == {"api", "front"}
    assert all("@sha256:" in reference for reference in build.images.values())

    platform.deploy(build)

    assert set(edge_versions(platform, 10)) == {("c1.0.0", "stable")}
    assert platform.status().runtime == "containers (podman)"
    running = containers(platform)
    api = {name: image for name, image in running.items() if "-api-stable-c1_0_0" in name}
    assert len(api) == 2 and set(api.values()) == {build.images["api"]}, running
    assert running[platform.runtime.container("front")] == build.images["front"]
    # Non-root, from the image's own user; the replica answers /readyz from its container.
    name = next(iter(api))
    user = images.ContainerEngine().output("podman", "exec", name, "id", "-u")
    assert user == "10001"
    replica = next(r for r in platform.store.load().stable.replicas)
    assert httpx.get(f"http://127.0.0.1:{replica.port}/readyz", timeout=5).status_code == 200
    # The front is the image's nginx, serving the pages through the edge.
    front = httpx.get(f"{platform.endpoints().edge_url}/", timeout=5)
    assert front.status_code == 200 and front.headers["server"] == "nginx"
    # The container sees its own secrets only: not Vault's tokens.
    listed = images.ContainerEngine().output("podman", "exec", name, "ls", "/run/secrets/socialnet")
    assert set(listed.split()) == {"db-password", "token-secret", "token-secret-previous"}


def test_a_rolling_deploy_of_containers_fails_no_request(
    platform: LocalPlatform, image_builds: Callable[..., Build]
) -> None:
    platform.deploy(image_builds("c1.0.0"))
    started = time.monotonic()
    with SteadyLoad(platform.endpoints().edge_url) as load:
        platform.deploy(image_builds("c2.0.0"))
        time.sleep(1)
    print(f"container deploy under load took {time.monotonic() - started:.1f} s, {load.report}")
    assert load.report.failures == []
    assert load.report.total > 50
    assert set(edge_versions(platform, 10)) == {("c2.0.0", "stable")}
    assert all("c2_0_0" in name for name in api_programs(platform))


def test_a_release_that_changes_the_front_replaces_it_without_a_failed_page(
    platform: LocalPlatform, image_builds: Callable[..., Build], tmp_path: Path
) -> None:
    serving = image_builds("c1.0.0")
    platform.deploy(serving)
    root = tmp_path / "source"
    shutil.copytree(repo_root() / "app", root / "app", ignore=shutil.ignore_patterns("__pycache__"))
    page = root / "app" / "front" / "static" / "index.html"
    page.write_text(page.read_text() + "\n<!-- a front change -->\n")
    source = SourceTree(root=root, sha=None, ref="worktree", url=str(root))
    changed, _ = build_release(
        platform.environment, "c-front", source, None, platform.image_registry()
    )
    assert changed.images["front"] != serving.images["front"]

    with SteadyLoad(platform.endpoints().edge_url, path="/") as load:
        platform.deploy(changed)
        time.sleep(1)
    assert load.report.failures == []
    assert load.report.total > 20
    assert containers(platform)[platform.runtime.container("front")] == changed.images["front"]
    assert "a front change" in httpx.get(f"{platform.endpoints().edge_url}/", timeout=5).text
    # A release that changes only the API leaves the front as it is: not even restarted.
    front_pid = platform.supervisor.processes()["front"]["pid"]
    main = root / "app" / "api" / "main.py"
    main.write_text(main.read_text() + "\n# an API change\n")
    api_only, _ = build_release(
        platform.environment, "c-api", source, None, platform.image_registry()
    )
    platform.deploy(api_only)
    assert set(edge_versions(platform, 5)) == {("c-api", "stable")}
    assert platform.supervisor.processes()["front"]["pid"] == front_pid
    assert containers(platform)[platform.runtime.container("front")] == changed.images["front"]


def test_an_image_missing_from_the_registry_is_refused_before_anything_changes(
    platform: LocalPlatform, image_builds: Callable[..., Build]
) -> None:
    serving = image_builds("c1.0.0")
    platform.deploy(serving)
    programs = api_programs(platform)
    registry = platform.image_registry()
    missing = f"{registry}/socialnet-api@sha256:{'0' * 64}"
    ghost = Build(
        version="ghost", git_sha="sha-ghost", ref="ghost", images={**serving.images, "api": missing}
    )
    with pytest.raises(PlatformError, match=r"api image .*sha256:0+ is not in its registry"):
        platform.deploy(ghost)
    assert api_programs(platform) == programs
    assert platform.status().stable_version == "c1.0.0"


def test_a_container_that_never_gets_ready_shows_its_log(
    platform: LocalPlatform, image_builds: Callable[..., Build]
) -> None:
    platform.deploy(image_builds("c1.0.0"))
    broken = image_builds("c-broken", {"SOCIALNET_DB_PORT": "1"})
    with pytest.raises(ReplicaNotReadyError) as raised:
        platform.deploy(broken)
    message = str(raised.value)
    assert "not ready" in message and "Uvicorn running" in message, message
    assert set(edge_versions(platform, 10)) == {("c1.0.0", "stable")}
    assert not [name for name in containers(platform) if "c_broken" in name]


def test_stopping_the_platform_leaves_no_container(
    platform: LocalPlatform, image_builds: Callable[..., Build]
) -> None:
    platform.deploy(image_builds("c1.0.0"))
    assert containers(platform)
    platform.stop()
    try:
        assert containers(platform) == {}
    finally:
        platform.start()
    # Started again, it runs the same images once the replicas are ready again.
    wait_for(lambda: _serves(platform), 60, "the edge after a restart")
    assert set(edge_versions(platform, 5)) == {("c1.0.0", "stable")}
    assert containers(platform)


def _serves(platform: LocalPlatform) -> bool:
    try:
        return httpx.get(f"{platform.endpoints().edge_url}/version", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_engine_settings_reach_podman() -> None:
    """The project's containers.conf (runc, lowered ulimits) is what podman reads."""
    require_containers()
    engine = images.ContainerEngine()
    result = subprocess.run(
        ["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"],
        capture_output=True, text=True, env={**os.environ, **engine.env}, check=True,
    )  # fmt: skip
    assert result.stdout.strip() == "runc"
