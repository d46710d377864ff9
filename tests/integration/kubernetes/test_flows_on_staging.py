"""The deploy and rollback flows with env=staging against the Kubernetes API emulator.

helm really installs and upgrades the chart on the emulated cluster; the migration check and
the migrate step reach a real PostgreSQL (controlPlane.database in a values overlay); the smoke
test probes a stand-in edge that answers as the emulated Deployments would (tests/support/kube_edge.py).
The `staging` fixture is in conftest.py.
"""

from __future__ import annotations

import uuid

import pytest

from flows.deploy import deploy
from flows.rollback import rollback
from socialnet_ops.core.environments import load_environment
from socialnet_ops.platforms.kubernetes import KubernetesPlatform
from tasks.ledger import load_ledger
from tests.integration.kubernetes.conftest import NAMESPACE, api_template_version, served
from tests.support.kube_edge import KubeEdge
from tests.support.kube_emulator import KubeEmulator

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_deploy_twice_then_roll_back_on_staging(kube: KubeEmulator, staging: KubeEdge) -> None:
    # Versions unique per run: build tasks are cached by version across sessions.
    run = uuid.uuid4().hex[:6]
    k1, k2 = f"k1-{run}", f"k2-{run}"
    first = deploy(env="staging", version=k1)
    assert first.previous is None
    assert served(staging) == {k1}

    second = deploy(env="staging", version=k2)
    assert second.previous == k1
    api = kube.get("apps/v1", "Deployment", NAMESPACE, "socialnet-api")
    assert api is not None and api_template_version(api) == k2
    assert served(staging) == {k2}

    back = rollback(env="staging")
    assert (back.previous, back.version) == (k2, k1)
    assert served(staging) == {k1}
    ledger = load_ledger("staging")
    assert ledger.stable is not None and ledger.stable.version == k1
    platform = KubernetesPlatform(load_environment("staging"))
    assert [entry.description for entry in platform.history()] == [
        f"stable={k1} canary=-",
        f"stable={k2} canary=-",
        "Rollback to 1",
    ]
