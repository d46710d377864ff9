"""KubernetesPlatform against the API emulator: deploy, upgrade, stall, canary, rollback."""

from __future__ import annotations

import json
import subprocess

import pytest

from socialnet_ops.platforms import platform_for
from socialnet_ops.platforms.base import Build, PlatformError, ReplicaNotReadyError
from socialnet_ops.platforms.kubernetes import KubernetesPlatform
from tests.integration.kubernetes.conftest import (
    NAMESPACE,
    api_template_version,
    staging_environment,
    stall_versions,
)
from tests.support.kube_emulator import KubeEmulator

pytestmark = pytest.mark.integration


def build(version: str) -> Build:
    return Build(version=version, git_sha=f"sha-{version}", ref="test")


def deployment(kube: KubeEmulator, name: str) -> dict:
    found = kube.get("apps/v1", "Deployment", NAMESPACE, name)
    assert found is not None, f"deployment {name} is missing"
    return found


def canary_weight_annotation(kube: KubeEmulator) -> str | None:
    ingress = kube.get("networking.k8s.io/v1", "Ingress", NAMESPACE, "socialnet-canary")
    if ingress is None:
        return None
    return ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"]


def test_platform_for_staging_is_kubernetes(kube: KubeEmulator) -> None:
    platform = platform_for(staging_environment())
    assert isinstance(platform, KubernetesPlatform)
    assert platform.is_running()
    endpoints = platform.start()
    assert endpoints.edge_url == "https://staging.socialnet.example"
    assert kube.get("v1", "Namespace", "", NAMESPACE) is not None


def test_deploy_then_upgrade(kube: KubeEmulator, platform: KubernetesPlatform) -> None:
    lines: list[str] = []
    platform.deploy(build("1.0.0"), progress=lines.append)
    api = deployment(kube, "socialnet-api")
    assert api["spec"]["replicas"] == 2  # from the environment file
    assert api["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry.socialnet.example/socialnet/socialnet-api:1.0.0"
    )
    assert api["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] == {
        "cpu": "250m",
        "memory": "256Mi",
    }
    assert any("rollout done" in line for line in lines)
    # First install with the bundled database: the migration Job is a plain resource.
    assert kube.get("batch/v1", "Job", NAMESPACE, "socialnet-migrate-install") is not None

    platform.deploy(build("1.1.0"))
    assert api_template_version(deployment(kube, "socialnet-api")) == "1.1.0"
    # The upgrade ran the migration Job as a pre-upgrade hook, deleted once it succeeded.
    assert kube.requests_matching("POST", rf"/namespaces/{NAMESPACE}/jobs$")
    assert kube.get("batch/v1", "Job", NAMESPACE, "socialnet-migrate") is None
    status = platform.status()
    assert (status.stable_version, status.canary_version, status.canary_weight) == (
        "1.1.0",
        None,
        0,
    )
    assert [r.description for r in platform.history()] == [
        "stable=1.0.0 canary=-",
        "stable=1.1.0 canary=-",
    ]
    assert all(program.state == "RUNNING" for program in status.programs)


def test_stalled_rollout_fails_and_helm_rolls_back(
    kube: KubeEmulator, platform: KubernetesPlatform
) -> None:
    platform.deploy(build("1.0.0"))
    stall_versions(kube, "2.0.0-bad")
    with pytest.raises(ReplicaNotReadyError) as failure:
        platform.deploy(build("2.0.0-bad"))
    message = str(failure.value)
    assert "ProgressDeadlineExceeded" in message
    assert 'ReplicaSet "socialnet-api-' in message
    assert "rolled the release back" in message
    assert api_template_version(deployment(kube, "socialnet-api")) == "1.0.0"
    history = platform.history()
    assert [entry.status for entry in history] == ["superseded", "failed", "deployed"]
    assert history[-1].description == "Rollback to 1"
    assert platform.status().stable_version == "1.0.0"


def test_canary_weight_promote_and_abort(kube: KubeEmulator, platform: KubernetesPlatform) -> None:
    platform.deploy(build("1.0.0"))
    with pytest.raises(PlatformError, match="no canary is running"):
        platform.set_canary_weight(10)

    platform.start_canary(build("1.1.0"))
    canary = deployment(kube, "socialnet-api-canary")
    assert api_template_version(canary) == "1.1.0"
    assert canary["spec"]["replicas"] == 1
    assert canary_weight_annotation(kube) == "0"
    for weight in (10, 50):
        platform.set_canary_weight(weight)
        assert canary_weight_annotation(kube) == str(weight)
    status = platform.status()
    assert (status.stable_version, status.canary_version, status.canary_weight) == (
        "1.0.0",
        "1.1.0",
        50,
    )
    # kubectl reads the same Ingress.
    shown = subprocess.run(
        [
            "kubectl",
            "--context",
            "staging",
            "-n",
            NAMESPACE,
            "get",
            "ingress",
            "socialnet-canary",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    annotations = json.loads(shown.stdout)["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/canary-weight"] == "50"

    platform.promote_canary()
    assert api_template_version(deployment(kube, "socialnet-api")) == "1.1.0"
    assert kube.get("apps/v1", "Deployment", NAMESPACE, "socialnet-api-canary") is None
    assert canary_weight_annotation(kube) is None

    platform.start_canary(build("1.2.0"))
    platform.set_canary_weight(25)
    platform.abort_canary()
    assert kube.get("apps/v1", "Deployment", NAMESPACE, "socialnet-api-canary") is None
    assert canary_weight_annotation(kube) is None
    status = platform.status()
    assert (status.stable_version, status.canary_version, status.canary_weight) == (
        "1.1.0",
        None,
        0,
    )
    platform.abort_canary()  # idempotent


def test_stalled_canary_leaves_stable_untouched(
    kube: KubeEmulator, platform: KubernetesPlatform
) -> None:
    platform.deploy(build("1.0.0"))
    stall_versions(kube, "1.1.0-bad")
    with pytest.raises(
        ReplicaNotReadyError, match="socialnet-api-canary: ProgressDeadlineExceeded"
    ):
        platform.start_canary(build("1.1.0-bad"))
    assert kube.get("apps/v1", "Deployment", NAMESPACE, "socialnet-api-canary") is None
    assert api_template_version(deployment(kube, "socialnet-api")) == "1.0.0"


def test_rollback_to_a_named_revision(kube: KubeEmulator, platform: KubernetesPlatform) -> None:
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        platform.deploy(build(version))
    assert platform.revision_of("1.0.0") == 1
    platform.rollback(build("1.0.0"))
    assert api_template_version(deployment(kube, "socialnet-api")) == "1.0.0"
    history = platform.history()
    assert history[-1].description == "Rollback to 1"
    # A rollback revision counts as the version it restored.
    assert platform.revision_of("1.0.0") == 4
    # kubectl agrees that the rollout finished.
    subprocess.run(
        [
            "kubectl",
            "--context",
            "staging",
            "-n",
            NAMESPACE,
            "rollout",
            "status",
            "deployment/socialnet-api",
            "--timeout=10s",
        ],
        check=True,
        capture_output=True,
    )
    # A version never deployed here is deployed again instead.
    platform.rollback(build("0.9.0"))
    assert api_template_version(deployment(kube, "socialnet-api")) == "0.9.0"


def test_database_env_needs_control_plane_access(
    kube: KubeEmulator, platform: KubernetesPlatform
) -> None:
    with pytest.raises(PlatformError, match="pre-upgrade Job"):
        platform.database_env()
