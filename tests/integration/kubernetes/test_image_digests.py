"""The Kubernetes platform runs the images a build pushed, pinned by digest, never a mutable tag."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from socialnet_ops.adapters import images
from socialnet_ops.platforms.base import Build, PlatformError
from socialnet_ops.platforms.kubernetes import KubernetesPlatform
from tests.integration.kubernetes.conftest import NAMESPACE, staging_environment
from tests.support.kube_emulator import KubeEmulator
from tests.support.registry import app_context, require_containers, running_registry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The app's images built from this checkout and pushed to a registry on 127.0.0.1."""
    require_containers()
    with running_registry(tmp_path_factory.mktemp("registry")) as registry:
        context = app_context(tmp_path_factory.mktemp("release"))
        labels = images.oci_labels("k1", None, str(context))
        built = images.build_and_push(Path(context), registry, "k1", labels)
        yield {image.component: image.reference for image in built}


def pod_images(kube: KubeEmulator, name: str) -> list[str]:
    found = kube.get("apps/v1", "Deployment", NAMESPACE, name)
    assert found is not None, f"deployment {name} is missing"
    return [container["image"] for container in found["spec"]["template"]["spec"]["containers"]]


def test_the_chart_runs_exactly_the_pushed_digests(
    kube: KubeEmulator, pushed: dict[str, str]
) -> None:
    platform = KubernetesPlatform(staging_environment(rollout_timeout="4s"))
    platform.deploy(Build(version="k1", git_sha="sha-k1", ref="test", images=pushed))
    assert pod_images(kube, "socialnet-api") == [pushed["api"]]
    assert pod_images(kube, "socialnet-front") == [pushed["front"]]

    platform.start_canary(Build(version="k2", git_sha="sha-k2", ref="test", images=pushed))
    assert pod_images(kube, "socialnet-api-canary") == [pushed["api"]]


def test_a_digest_missing_from_the_registry_changes_nothing(
    kube: KubeEmulator, pushed: dict[str, str]
) -> None:
    platform = KubernetesPlatform(staging_environment(rollout_timeout="4s"))
    platform.deploy(Build(version="k1", git_sha="sha-k1", ref="test", images=pushed))
    revisions = len(platform.helm.history())
    registry = pushed["api"].split("/", 1)[0]
    missing = {**pushed, "api": f"{registry}/socialnet-api@sha256:{'1' * 64}"}
    with pytest.raises(PlatformError, match=r"api image .*sha256:1+ is not in its registry"):
        platform.deploy(Build(version="k3", git_sha="sha-k3", ref="test", images=missing))
    with pytest.raises(PlatformError, match="is not in its registry"):
        platform.start_canary(Build(version="k3", git_sha="sha-k3", ref="test", images=missing))
    assert len(platform.helm.history()) == revisions
    assert pod_images(kube, "socialnet-api") == [pushed["api"]]
