"""Opt-in: the kubernetes platform on a real cluster (e.g. kind), skipped when KUBECONFIG is unset.

    kind create cluster --name socialnet
    docker build -f app/api/Dockerfile -t socialnet-api:rc1 .      # and load both images:
    docker build -f app/front/Dockerfile -t socialnet-front:rc1 .
    kind load docker-image socialnet-api:rc1 socialnet-front:rc1 --name socialnet
    KUBECONFIG=~/.kube/config SOCIALNET_RC_REGISTRY=docker.io/library SOCIALNET_RC_VERSION=rc1 \
        uv run pytest tests/real_cluster -v

It installs the chart into a fresh namespace (`socialnet-rc-<random>`, deleted afterwards) with
the bundled PostgreSQL, waits for the real rollout, runs a canary (start, weight, abort) and
deletes everything. SOCIALNET_RC_CONTEXT picks a context other than the current one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from socialnet_ops.core.environments import parse_environment
from socialnet_ops.core.paths import repo_root
from socialnet_ops.core.secrets_catalog import DB_LOGIN_ROLES, RuntimeSecrets, strong_token
from socialnet_ops.platforms.base import Build
from socialnet_ops.platforms.kubernetes import KubernetesPlatform
from tests.support.kube_tools import require_helm

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("KUBECONFIG"),
        reason="no cluster configured: set KUBECONFIG (e.g. a kind cluster) to run the real-cluster suite",
    ),
]


def current_context() -> str:
    if os.environ.get("SOCIALNET_RC_CONTEXT"):
        return os.environ["SOCIALNET_RC_CONTEXT"]
    first = os.environ["KUBECONFIG"].split(os.pathsep)[0]
    return str(yaml.safe_load(Path(first).read_text())["current-context"])


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubernetesPlatform]:
    require_helm()
    from kubernetes import client

    namespace = f"socialnet-rc-{uuid.uuid4().hex[:6]}"
    folder = tmp_path_factory.mktemp("real-cluster")
    overlay = folder / "values.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "image": {
                    "registry": os.environ.get("SOCIALNET_RC_REGISTRY", "docker.io/library"),
                    "pullPolicy": "IfNotPresent",
                },
                "ingress": {"tls": {"enabled": False}},
                "metrics": {"serviceMonitor": {"enabled": False}},
                "database": {"persistence": {"size": "1Gi"}},
            }
        )
    )
    previous = os.environ.get("SOCIALNET_EXTRA_VALUES")
    os.environ["SOCIALNET_EXTRA_VALUES"] = str(overlay)
    document = yaml.safe_load((repo_root() / "deployments/environments/staging.yaml").read_text())
    document["platform"].update(
        {
            "context": current_context(),
            "namespace": namespace,
            "api_replicas": 1,
            "front_replicas": 1,
            "rollout_timeout": "6m",
        }
    )
    environment = parse_environment(document, "real-cluster staging")
    platform = KubernetesPlatform(environment)
    platform.start()
    core = client.CoreV1Api(platform._api())
    # What the secrets flow writes: the API's Secret and the database roles' passwords.
    platform.install_secrets(
        RuntimeSecrets(
            {
                "database": {"username": DB_LOGIN_ROLES[0], "password": strong_token(16)},
                "api": {"token_secret": strong_token(32), "token_secret_previous": ""},
            }
        )
    )
    try:
        yield platform
    finally:
        platform.helm.run("uninstall", platform.settings.release_name, "--wait", ok_codes=(0, 1))
        core.delete_namespace(namespace)
        if previous is None:
            os.environ.pop("SOCIALNET_EXTRA_VALUES", None)
        else:
            os.environ["SOCIALNET_EXTRA_VALUES"] = previous


def test_deploy_canary_abort_on_a_real_cluster(platform: KubernetesPlatform) -> None:
    version = os.environ.get("SOCIALNET_RC_VERSION", "rc1")
    build = Build(version=version, git_sha="real-cluster", ref="test")
    platform.deploy(build, progress=print)
    state = platform.rollout("api")
    assert state is not None and state.done, state
    assert platform.status().stable_version == version

    platform.start_canary(build, progress=print)
    platform.set_canary_weight(20)
    assert platform.canary_weight() == 20
    platform.abort_canary(progress=print)
    status = platform.status()
    assert (status.canary_version, status.canary_weight) == (None, 0)
