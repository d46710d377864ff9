"""The kubernetes platform against the Kubernetes API emulator (tests/support/kube_emulator.py).

Each test gets a fresh emulator and a kubeconfig whose `staging` context points at it; helm,
kubectl and the official client all reach it over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from socialnet_ops.environments import Environment, parse_environment
from socialnet_ops.paths import repo_root
from socialnet_ops.platforms.kubernetes import KubernetesPlatform
from tests.support.kube_emulator import KubeEmulator
from tests.support.kube_tools import require_helm, sandbox_env

NAMESPACE = "socialnet"


@pytest.fixture(scope="session")
def helm() -> str:
    return require_helm()


def staging_environment(**platform: Any) -> Environment:
    """deployments/environments/staging.yaml with platform settings changed for a test."""
    path = repo_root() / "deployments/environments/staging.yaml"
    document = yaml.safe_load(path.read_text())
    document["platform"].update(platform)
    return parse_environment(document, str(path))


@pytest.fixture
def kube(helm: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeEmulator]:
    with tempfile.TemporaryDirectory(prefix="kube-it-") as folder, KubeEmulator() as emulator:
        kubeconfig = emulator.write_kubeconfig(
            Path(folder) / "kubeconfig", ["staging", "production", "technical"], NAMESPACE
        )
        for key, value in sandbox_env(Path(folder), kubeconfig).items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("SOCIALNET_EXTRA_VALUES", raising=False)
        yield emulator


@pytest.fixture
def platform(kube: KubeEmulator) -> KubernetesPlatform:
    """Staging with a short rollout budget: a stalled rollout fails in seconds."""
    return KubernetesPlatform(staging_environment(rollout_timeout="4s"))


def api_template_version(deployment: dict[str, Any]) -> str:
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return next(item["value"] for item in env if item["name"] == "SOCIALNET_VERSION")


def stall_versions(kube: KubeEmulator, *versions: str) -> None:
    """Deployments whose pods run one of `versions` never become ready."""

    def policy(deployment: dict[str, Any]) -> str:
        containers = deployment["spec"]["template"]["spec"]["containers"]
        images = {container["image"].rsplit(":", 1)[-1] for container in containers}
        return "stall" if images & set(versions) else "complete"

    kube.rollout_policy = policy
