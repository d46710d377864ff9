"""The kubernetes platform against the Kubernetes API emulator (tests/support/kube_emulator.py).

Each test gets a fresh emulator and a kubeconfig whose `staging` context points at it; helm,
kubectl and the official client all reach it over HTTP on 127.0.0.1. `staging` adds what the
flows need around it: a real PostgreSQL, the AWS emulator and the stand-in edge
(tests/support/kube_edge.py), wired in through a values overlay (SOCIALNET_EXTRA_VALUES).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from moto.server import ThreadedMotoServer
from prefect.variables import Variable

from socialnet_ops.adapters.s3 import ensure_bucket_exists
from socialnet_ops.core.backups import ObjectStore
from socialnet_ops.core.environments import Environment, load_environment, parse_environment
from socialnet_ops.core.paths import repo_root
from socialnet_ops.platforms.kubernetes import KubernetesPlatform
from tasks.ledger import ledger_variable
from tests.support.kube_edge import KubeEdge, running_edge
from tests.support.kube_emulator import KubeEmulator
from tests.support.kube_tools import require_helm, sandbox_env
from tests.support.postgres import PostgresServer

NAMESPACE = "socialnet"
DATABASE = "socialnet_kube_flows"


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


@pytest.fixture
def staging(
    prefect_server: None,
    postgres_server: PostgresServer,
    kube: KubeEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[KubeEdge]:
    """Staging on the emulator, ready for the flows: database, bucket, edge; nothing deployed."""
    # The ledger lives in the session's Prefect server: each test starts from an empty one.
    Variable.unset(ledger_variable("staging"))
    postgres_server.create_database(DATABASE)
    monkeypatch.setenv("SOCIALNET_STATE_DIR", str(tmp_path / "state"))
    # Staging's bucket (pre-deploy backups) lives in the AWS emulator, reached as AWS itself.
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    s3.start()
    host, port = s3.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    staging_backup = load_environment("staging").backup
    assert staging_backup is not None
    ensure_bucket_exists(
        ObjectStore(
            bucket=staging_backup.bucket,
            region=load_environment("staging").cloud.region,
            endpoint_url=f"http://{host}:{port}",
            create_bucket=True,
        )
    )
    with running_edge(kube, NAMESPACE) as edge:
        add_values_overlay(
            tmp_path / "staging-test-values.yaml",
            monkeypatch,
            {
                "controlPlane": {
                    "edgeUrl": edge.url,
                    # No Prometheus unless a test starts one (see add_values_overlay).
                    "prometheusUrl": "http://127.0.0.1:9",
                    "database": {
                        "host": postgres_server.host,
                        "port": postgres_server.port,
                        "name": DATABASE,
                        "user": postgres_server.superuser,
                    },
                }
            },
        )
        yield edge
    s3.stop()
    postgres_server.drop_database(DATABASE)
    Variable.unset(ledger_variable("staging"))


def add_values_overlay(path: Path, monkeypatch: pytest.MonkeyPatch, values: dict[str, Any]) -> None:
    """One more values file over the environment's (SOCIALNET_EXTRA_VALUES, later files win)."""
    path.write_text(yaml.safe_dump(values))
    earlier = os.environ.get("SOCIALNET_EXTRA_VALUES", "")
    monkeypatch.setenv(
        "SOCIALNET_EXTRA_VALUES", os.pathsep.join(item for item in (earlier, str(path)) if item)
    )


def served(edge: KubeEdge, probes: int = 10) -> set[str]:
    """The versions that answer /version through the edge."""
    with httpx.Client(base_url=edge.url, timeout=5) as client:
        return {client.get("/version").json()["version"] for _ in range(probes)}
