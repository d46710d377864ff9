"""The canary flow with env=staging against the Kubernetes API emulator, judged by a real Prometheus.

Staging releases by rolling deploys; the test runs the flows on a copy of the catalog whose
staging.yaml holds short canary steps (SOCIALNET_ENVIRONMENTS_DIR). helm installs the canary
track on the emulated cluster and the flow moves the canary Ingress' weight; the stand-in edge
(tests/support/kube_edge.py) routes bounded user traffic by that weight, answers as the pods'
builds would (a build's SOCIALNET_FAULT_ERROR_RATE included) and exports the API's metrics, which
a Prometheus started here scrapes every second; the analysis reads that Prometheus. Last, a
blue-green release: testers reach the preview by header (the canary Ingress' canary-by-header,
which the stand-in edge honours), then one switch (weight 0 to 100).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.canary import CanaryAbortedError, canary
from flows.deploy import deploy
from socialnet_ops.core.environments import load_environment
from socialnet_ops.core.paths import repo_root
from socialnet_ops.platforms.kubernetes import KubernetesPlatform
from tasks.ledger import load_ledger
from tasks.reporting import artifact_key
from tests.integration.canary.conftest import FAST_ANALYSIS
from tests.integration.canary.traffic import UserTraffic
from tests.integration.kubernetes.conftest import (
    NAMESPACE,
    add_values_overlay,
    api_template_version,
    served,
)
from tests.support.kube_edge import KubeEdge, scraping_prometheus
from tests.support.kube_emulator import KubeEmulator

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CANARY_WEIGHT_ANNOTATION = "nginx.ingress.kubernetes.io/canary-weight"
# Analysis every 5 s over a 10 s window, 20 canary requests at least; the first failure aborts.
# At 25 requests/s a 50 % canary answers ~60 requests a window.
STEPS: list[dict[str, Any]] = [
    {"set_weight": 50},
    {"analysis": {"duration": "10s"}},
    {"set_weight": 100},
]


@pytest.fixture
def canary_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The catalog as it is, but staging releases by canary with short steps."""
    folder = tmp_path / "environments"
    shutil.copytree(repo_root() / "deployments/environments", folder)
    document = yaml.safe_load((folder / "staging.yaml").read_text())
    assert document["name"] == "staging" and document["release"]["strategy"] == "rolling"
    document["release"].update({"strategy": "canary", "steps": STEPS, "analysis": FAST_ANALYSIS})
    (folder / "staging.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    monkeypatch.setenv("SOCIALNET_ENVIRONMENTS_DIR", str(folder))
    return folder


@pytest.fixture
def staging_with_prometheus(
    canary_catalog: Path, staging: KubeEdge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[KubeEdge]:
    """Staging whose controlPlane.prometheusUrl is a real Prometheus scraping the edge."""
    assert load_environment("staging").release.strategy == "canary"
    with scraping_prometheus(staging, tmp_path / "prometheus", scrape_interval=1) as url:
        add_values_overlay(
            tmp_path / "staging-prometheus-values.yaml",
            monkeypatch,
            {"controlPlane": {"prometheusUrl": url}},
        )
        yield staging


def canary_weights(kube: KubeEmulator, name: str, since: int = 0) -> tuple[list[int], str]:
    """The canary Ingress' successive weights (repeats dropped) and its last change's type."""
    changes = kube.changes("networking.k8s.io/v1", "Ingress", NAMESPACE, name)[since:]
    weights: list[int] = []
    for _, ingress in changes:
        weight = int(ingress["metadata"]["annotations"][CANARY_WEIGHT_ANNOTATION])
        if not weights or weights[-1] != weight:
            weights.append(weight)
    return weights, changes[-1][0] if changes else ""


def canary_rows() -> list[dict[str, str]]:
    """The newest canary step table of staging."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[artifact_key("canary", "staging")])
            )
        )
    newest = max(artifacts, key=lambda artifact: artifact.created or 0)
    assert isinstance(newest.data, str)
    rows: list[dict[str, str]] = json.loads(newest.data)
    return rows


def user_traffic(edge: KubeEdge) -> UserTraffic:
    """25 profile reads a second through the edge, for 2 minutes and 3000 requests at most."""
    return UserTraffic(edge.url, rate=25, workers=4, max_seconds=120, max_requests=3000)


def answered(edge: KubeEdge, version: str, track: str, errors: bool = False) -> int:
    """User requests (/api) that `version` on `track` answered (only 5xx with errors=True)."""
    return sum(
        count
        for (route, _, status, seen_version, seen_track), count in edge.requests.items()
        if route.startswith("/api/")
        and (seen_version, seen_track) == (version, track)
        and (status.startswith("5") or not errors)
    )


@pytest.mark.timeout(420)
def test_canary_promotes_a_good_build_aborts_a_bad_one_and_blue_green_switches_on_staging(
    kube: KubeEmulator, staging_with_prometheus: KubeEdge, canary_catalog: Path
) -> None:
    edge = staging_with_prometheus
    platform = KubernetesPlatform(load_environment("staging"))
    names = platform.names()
    run = uuid.uuid4().hex[:6]  # build tasks are cached by version across sessions
    base, good, bad = f"kc-base-{run}", f"kc-good-{run}", f"kc-bad-{run}"

    deploy(env="staging", version=base)
    assert served(edge) == {base}

    # A healthy build: measured, promoted, then serving everyone.
    started = time.monotonic()
    with user_traffic(edge) as traffic:
        result = canary(env="staging", version=good)
        time.sleep(1)
    print(f"healthy canary: {time.monotonic() - started:.0f} s, {result.seconds}")
    print(f"traffic: {traffic.report.total} requests, tracks {traffic.report.tracks()}")
    assert (result.outcome, result.stable, result.weight) == ("promoted", base, 100)
    # A slow scrape may leave one window without data (inconclusive, measured again).
    assert result.verdicts.get("pass", 0) >= 2 and "fail" not in result.verdicts, result
    weights, last_change = canary_weights(kube, names["canary_ingress"])
    assert (weights, last_change) == ([0, 50, 100], "DELETED")
    assert kube.get("apps/v1", "Deployment", NAMESPACE, names["canary"]) is None
    api = kube.get("apps/v1", "Deployment", NAMESPACE, names["api"])
    assert api is not None and api_template_version(api) == good
    assert served(edge) == {good}
    # The edge is the test's stand-in for ingress-nginx (a Python proxy on the same 2 cores as
    # everything else): it may drop a request while pods are swapped. The app itself answered no
    # error (below); zero-downtime through a real proxy is asserted on the local platform (HAProxy).
    failed = [answer for answer in traffic.report.answers if answer.failed]
    assert len(failed) <= traffic.report.total // 100, f"users saw failures: {failed}"
    assert traffic.report.tracks()["canary"] > 0
    assert answered(edge, good, "canary") > 0 and answered(edge, good, "canary", errors=True) == 0
    measured = [row for row in canary_rows() if row["verdict"].startswith("pass")]
    assert len(measured) == result.verdicts["pass"]
    assert all(int(row["canary requests"]) >= 20 for row in measured), measured
    ledger = load_ledger("staging")
    assert ledger.stable is not None and ledger.canary is None
    assert (ledger.stable.version, ledger.stable.strategy) == (good, "canary")
    assert ledger.history[0].version == base

    # A build failing 30 % of user requests: aborted at the first analysis, stable untouched.
    stable_before = kube.get("apps/v1", "Deployment", NAMESPACE, names["api"])
    assert stable_before is not None
    seen_before = len(
        kube.changes("networking.k8s.io/v1", "Ingress", NAMESPACE, names["canary_ingress"])
    )
    ledger_before = ledger.model_dump(exclude={"canary", "last_backup"})
    with (
        user_traffic(edge) as traffic,
        pytest.raises(CanaryAbortedError) as aborted,
    ):
        canary(env="staging", version=bad, settings={"SOCIALNET_FAULT_ERROR_RATE": "0.3"})
    details = aborted.value.details
    print(f"aborted: {details.reason}; traffic {traffic.report.tracks()}")
    print(
        f"bad canary at the edge: {answered(edge, bad, 'canary', errors=True)} of "
        f"{answered(edge, bad, 'canary')} user requests failed"
    )
    assert (details.outcome, details.step, details.weight) == ("aborted", 2, 50)
    assert details.verdicts.get("fail") == 1 and "pass" not in details.verdicts
    assert "above the policy's 5.0%" in details.reason
    weights, last_change = canary_weights(kube, names["canary_ingress"], since=seen_before)
    assert (weights, last_change) == ([0, 50, 0], "DELETED")
    assert kube.get("apps/v1", "Deployment", NAMESPACE, names["canary"]) is None
    stable_after = kube.get("apps/v1", "Deployment", NAMESPACE, names["api"])
    assert stable_after is not None
    assert stable_after["spec"] == stable_before["spec"]
    assert stable_after["metadata"]["generation"] == stable_before["metadata"]["generation"]
    assert served(edge) == {good}
    # Only the canary failed users; stable answered every request.
    failed = [answer for answer in traffic.report.answers if answer.failed]
    assert failed and {answer.track for answer in failed} == {"canary"}
    assert answered(edge, bad, "canary", errors=True) > 0
    assert answered(edge, good, "stable", errors=True) == 0
    ledger = load_ledger("staging")
    assert ledger.canary is None
    assert ledger.model_dump(exclude={"canary", "last_backup"}) == ledger_before

    assert [entry.description for entry in platform.history()] == [
        f"stable={base} canary=-",
        f"stable={base} canary={good}",
        f"stable={good} canary=-",
        f"stable={good} canary={bad}",
        f"stable={good} canary=-",
    ]

    # Blue-green on the same cluster: testers reach the preview by header (canary-by-header), the
    # analysis judges it on their requests, then one switch sends every user to it (weight 100).
    blue = f"kc-blue-{run}"
    document = yaml.safe_load((canary_catalog / "staging.yaml").read_text())
    document["release"].update(
        {
            "strategy": "blue_green",
            "steps": [],
            "traffic": {"header": "X-Canary"},
            "blue_green": {
                "pre_promotion_analysis": {"duration": "10s"},
                "post_promotion_analysis": {"duration": "10s"},
                "scale_down_delay": "2s",
                # Its Services' addresses resolve only in the cluster: testers bring the traffic.
                "preview_load": {"rate": 1, "duration": "30s"},
            },
        }
    )
    (canary_catalog / "staging.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    seen_before = len(
        kube.changes("networking.k8s.io/v1", "Ingress", NAMESPACE, names["canary_ingress"])
    )
    testers = UserTraffic(
        edge.url, rate=10, workers=2, max_seconds=120, headers={"X-Canary": "always"}
    )
    with user_traffic(edge), testers:
        result = canary(env="staging", version=blue)
    assert result.outcome == "promoted", result.reason
    assert "fail" not in result.verdicts and result.verdicts.get("pass", 0) >= 2, result
    weights, last_change = canary_weights(kube, names["canary_ingress"], since=seen_before)
    assert (weights, last_change) == ([0, 100], "DELETED")
    assert testers.report.tracks()["canary"] > 0
    annotations = kube.changes(
        "networking.k8s.io/v1", "Ingress", NAMESPACE, names["canary_ingress"]
    )
    assert (
        annotations[seen_before][1]["metadata"]["annotations"][
            "nginx.ingress.kubernetes.io/canary-by-header"
        ]
        == "X-Canary"
    )
    assert served(edge) == {blue}
    # The aborted bad canary's fault setting did not follow the next build (a values merge did).
    api = kube.get("apps/v1", "Deployment", NAMESPACE, names["api"])
    assert api is not None
    env = api["spec"]["template"]["spec"]["containers"][0].get("env", [])
    assert "SOCIALNET_FAULT_ERROR_RATE" not in {item["name"] for item in env}
    ledger = load_ledger("staging")
    assert ledger.stable is not None and ledger.stable.strategy == "blue_green"
