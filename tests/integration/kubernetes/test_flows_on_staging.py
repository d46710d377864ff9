"""The deploy and rollback flows with env=staging against the Kubernetes API emulator.

helm really installs and upgrades the chart on the emulated cluster; the migration check and
the migrate step reach a real PostgreSQL (controlPlane.database in a values overlay); the smoke
test probes a stand-in edge that answers as the emulated Deployments would (tests/support/kube_edge.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from moto.server import ThreadedMotoServer

from flows.deploy import deploy
from flows.rollback import rollback
from socialnet_ops.backups import ObjectStore
from socialnet_ops.environments import load_environment
from socialnet_ops.platforms.kubernetes import KubernetesPlatform
from socialnet_ops.s3 import ensure_bucket_exists
from tasks.ledger import load_ledger
from tests.integration.kubernetes.conftest import NAMESPACE, api_template_version
from tests.support.kube_edge import KubeEdge, running_edge
from tests.support.kube_emulator import KubeEmulator
from tests.support.postgres import PostgresServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATABASE = "socialnet_kube_flows"


@pytest.fixture
def staging(
    prefect_server: None,
    postgres_server: PostgresServer,
    kube: KubeEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[KubeEdge]:
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
        overlay = tmp_path / "staging-test-values.yaml"
        overlay.write_text(
            yaml.safe_dump(
                {
                    "controlPlane": {
                        "edgeUrl": edge.url,
                        "prometheusUrl": "http://127.0.0.1:9",
                        "database": {
                            "host": postgres_server.host,
                            "port": postgres_server.port,
                            "name": DATABASE,
                            "user": postgres_server.superuser,
                        },
                    }
                }
            )
        )
        monkeypatch.setenv("SOCIALNET_EXTRA_VALUES", str(overlay))
        yield edge
    s3.stop()
    postgres_server.drop_database(DATABASE)


def served(edge: KubeEdge, probes: int = 10) -> set[str]:
    with httpx.Client(base_url=edge.url, timeout=5) as client:
        return {client.get("/version").json()["version"] for _ in range(probes)}


def test_deploy_twice_then_roll_back_on_staging(kube: KubeEmulator, staging: KubeEdge) -> None:
    # Versions unique per run: build tasks are cached by version across sessions.
    run = uuid.uuid4().hex[:6]
    k1, k2 = f"k1-{run}", f"k2-{run}"
    first = deploy(env="staging", version=k1)
    assert first["previous"] is None
    assert served(staging) == {k1}

    second = deploy(env="staging", version=k2)
    assert second["previous"] == k1
    api = kube.get("apps/v1", "Deployment", NAMESPACE, "socialnet-api")
    assert api is not None and api_template_version(api) == k2
    assert served(staging) == {k2}

    back = rollback(env="staging")
    assert (back["from"], back["version"]) == (k2, k1)
    assert served(staging) == {k1}
    ledger = load_ledger("staging")
    assert ledger.stable is not None and ledger.stable.version == k1
    platform = KubernetesPlatform(load_environment("staging"))
    assert [entry.description for entry in platform.history()] == [
        f"stable={k1} canary=-",
        f"stable={k2} canary=-",
        "Rollback to 1",
    ]
