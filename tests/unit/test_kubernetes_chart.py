"""The socialnet chart: `helm lint --strict`, and every environment's values rendered by
`helm template` into manifests valid against the Kubernetes schemas of the environment's version."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from socialnet_ops.core.environments import KubernetesPlatform as KubernetesSettings
from socialnet_ops.core.environments import TrafficPolicy, load_environment
from socialnet_ops.core.paths import repo_root
from socialnet_ops.platforms.base import PlatformError
from socialnet_ops.platforms.kubernetes.platform import KubernetesPlatform
from tests.support.kube_tools import require_helm, run_helm, sandbox_env

pytestmark = pytest.mark.integration

CHART = repo_root() / "infrastructure/helm/socialnet"
APP_ENVIRONMENTS = ["staging", "production"]
# Kinds of CRDs the chart may use; kubernetes-validate has no schema for them.
CUSTOM_GROUPS = ("monitoring.coreos.com/",)


OVERLAYS = Path(tempfile.gettempdir())


@pytest.fixture(scope="module")
def helm() -> Iterator[str]:
    """helm, and a folder for the values overlays of this module."""
    global OVERLAYS
    with tempfile.TemporaryDirectory(prefix="chart-overlays-") as folder:
        OVERLAYS = Path(folder)
        yield require_helm()


def values_arguments(environment: str, overrides: dict[str, Any] | None = None) -> list[str]:
    """The values files the platform passes: the environment's, then its settings overlay."""
    settings = load_environment(environment)
    platform = KubernetesPlatform(settings)
    layered = platform._settings_values()
    if overrides:
        layered = _merge(layered, overrides)
    overlay = OVERLAYS / f"{environment}-{len(list(OVERLAYS.iterdir()))}.yaml"
    overlay.write_text(yaml.safe_dump(layered))
    return ["--values", str(repo_root() / settings.platform.values_file), "--values", str(overlay)]  # type: ignore[union-attr]


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    from socialnet_ops.platforms.kubernetes.platform import deep_merge

    return deep_merge(base, override)


def render(
    helm: str, environment: str, overrides: dict[str, Any] | None = None, upgrade: bool = False
) -> list[dict[str, Any]]:
    arguments = ["template", "socialnet", str(CHART), "--namespace", "socialnet"]
    if upgrade:
        arguments.append("--is-upgrade")
    output = run_helm(helm, *arguments, *values_arguments(environment, overrides))
    return [doc for doc in yaml.safe_load_all(output) if doc]


def kubernetes_version(environment: str) -> str:
    platform = load_environment(environment).platform
    assert isinstance(platform, KubernetesSettings)
    return platform.kubernetes_version


def assert_valid(documents: list[dict[str, Any]], version: str) -> None:
    problems = []
    for document in documents:
        where = f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"
        if str(document.get("apiVersion", "")).startswith(CUSTOM_GROUPS):
            assert document.get("spec"), f"{where}: a custom resource without spec"
            continue
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{where}: {error.message} at {list(error.path)}")
    assert not problems, "\n".join(problems)


def kinds(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in documents}


@pytest.mark.parametrize("environment", APP_ENVIRONMENTS)
def test_lint_strict(helm: str, environment: str) -> None:
    output = run_helm(helm, "lint", "--strict", str(CHART), *values_arguments(environment))
    assert "0 chart(s) failed" in output


@pytest.mark.parametrize("environment", APP_ENVIRONMENTS)
@pytest.mark.parametrize("upgrade", [False, True], ids=["install", "upgrade"])
def test_environment_values_render_valid_manifests(
    helm: str, environment: str, upgrade: bool
) -> None:
    documents = render(helm, environment, upgrade=upgrade)
    assert_valid(documents, kubernetes_version(environment))
    found = kinds(documents)
    for expected in (
        "Deployment/socialnet-api",
        "Deployment/socialnet-front",
        "Service/socialnet-api",
        "Service/socialnet-front",
        "Ingress/socialnet",
        "ConfigMap/socialnet-config",
        "PodDisruptionBudget/socialnet-api",
        "NetworkPolicy/socialnet-db",
        "StatefulSet/socialnet-db",
    ):
        assert expected in found, f"{environment}: {expected} not rendered"
    job = next(d for d in documents if d["kind"] == "Job")
    hooks = job["metadata"].get("annotations", {}).get("helm.sh/hook")
    assert hooks == ("pre-install,pre-upgrade" if upgrade else None)


def test_pods_run_as_non_root_with_probes(helm: str) -> None:
    documents = render(helm, "staging")
    for document in documents:
        if document["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        pod = document["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["readinessProbe"] and container["livenessProbe"]
    api = kinds(documents)["Deployment/socialnet-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_only_the_api_reaches_the_database(helm: str) -> None:
    policy = kinds(render(helm, "staging"))["NetworkPolicy/socialnet-db"]["spec"]
    sources = policy["ingress"][0]["from"]
    assert len(sources) == 1 and "namespaceSelector" not in sources[0]
    assert sources[0]["podSelector"]["matchExpressions"][0]["values"] == [
        "api",
        "migrations",
        "backup",
    ]


def test_canary_track_renders_weighted_ingress(helm: str) -> None:
    documents = render(
        helm, "production", {"canary": {"enabled": True, "tag": "1.3.0", "weight": 25}}
    )
    assert_valid(documents, kubernetes_version("production"))
    found = kinds(documents)
    canary = found["Ingress/socialnet-canary"]["metadata"]["annotations"]
    assert canary["nginx.ingress.kubernetes.io/canary"] == "true"
    assert canary["nginx.ingress.kubernetes.io/canary-weight"] == "25"
    selector = found["Service/socialnet-api-canary"]["spec"]["selector"]
    assert selector["socialnet.example/track"] == "canary"
    assert "replicas" not in found["Deployment/socialnet-api"]["spec"]  # the HPA owns it
    assert found["HorizontalPodAutoscaler/socialnet-api"]["spec"]["minReplicas"] == 4


def test_external_database_and_backup_cronjob(helm: str) -> None:
    documents = render(
        helm,
        "staging",
        {
            "database": {"external": {"enabled": True, "host": "db.example", "port": 6432}},
            "backup": {"enabled": True, "bucket": "socialnet-backups-staging"},
        },
    )
    assert_valid(documents, kubernetes_version("staging"))
    found = kinds(documents)
    assert "StatefulSet/socialnet-db" not in found
    assert found["ConfigMap/socialnet-config"]["data"]["SOCIALNET_DB_HOST"] == "db.example"
    assert "CronJob/socialnet-backup" in found
    job = next(d for d in documents if d["kind"] == "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"canary": {"weight": 120}}, "canary.weight"),
        ({"api": {"extraEnv": {"SOCIALNET_DB_PASSWORD": "x"}}}, "api.extraEnv"),
        ({"canary": {"enabled": True, "tag": ""}}, "canary"),
        ({"api": {"replicaz": 3}}, "replicaz"),
        ({"canary": {"traffic": {"header": "X Canary"}}}, "canary.traffic.header"),
        ({"canary": {"traffic": {"mode": "split"}}}, "canary.traffic.mode"),
        ({"canary": {"traffic": {"cookie": "a;b"}}}, "canary.traffic.cookie"),
        # ab routes by header or cookie only: it needs one, and has no weighted users to stick.
        ({"canary": {"traffic": {"mode": "ab"}}}, "canary.traffic"),
        (
            {"canary": {"traffic": {"mode": "ab", "header": "X-Canary", "sticky": True}}},
            "canary.traffic.sticky",
        ),
        ({"canary": {"antiAffinity": "yes"}}, "canary.antiAffinity"),
    ],
)
def test_schema_rejects_bad_values(helm: str, overrides: dict[str, Any], complaint: str) -> None:
    arguments = ["template", "socialnet", str(CHART), *values_arguments("staging", overrides)]
    with tempfile.TemporaryDirectory() as folder:
        result = subprocess.run(
            [helm, *arguments],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", **sandbox_env(Path(folder))},
            check=False,
        )
    assert result.returncode != 0
    assert complaint in result.stderr


def traffic_values(**policy: Any) -> dict[str, Any]:
    """What the platform passes as canary.traffic for a production policy `policy`."""
    environment = load_environment("production")
    release = environment.release.model_copy(update={"traffic": TrafficPolicy(**policy)})
    platform = KubernetesPlatform(environment.model_copy(update={"release": release}))
    values = platform._traffic_values(repo_root(), canary=True)
    assert values is not None
    return values


def canary_release(weight: int, **policy: Any) -> dict[str, Any]:
    return {
        "canary": {
            "enabled": True,
            "tag": "1.3.0",
            "weight": weight,
            "traffic": traffic_values(**policy),
        }
    }


def test_header_cookie_and_sticky_routing_annotate_both_ingresses(helm: str) -> None:
    overrides = canary_release(10, header="X-Canary", cookie="socialnet-canary", sticky=True)
    documents = render(helm, "production", overrides)
    assert_valid(documents, kubernetes_version("production"))
    found = kinds(documents)
    canary = found["Ingress/socialnet-canary"]["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert canary[prefix + "canary-weight"] == "10"
    assert canary[prefix + "canary-by-header"] == "X-Canary"
    assert canary[prefix + "canary-by-header-value"] == "always"
    assert canary[prefix + "canary-by-cookie"] == "socialnet-canary"
    assert canary[prefix + "affinity-canary-behavior"] == "sticky"
    # Both Ingresses carry the same cookie affinity: a session keeps the track that served it.
    main = found["Ingress/socialnet"]["metadata"]["annotations"]
    for ingress in (canary, main):
        assert ingress[prefix + "affinity"] == "cookie"
        assert ingress[prefix + "session-cookie-name"] == "socialnet-track"
    run_helm(helm, "lint", "--strict", str(CHART), *values_arguments("production", overrides))


def test_ab_mode_gives_users_no_weight_and_weight_only_adds_nothing(helm: str) -> None:
    documents = render(helm, "production", canary_release(50, mode="ab", cookie="socialnet-canary"))
    found = kinds(documents)
    canary = found["Ingress/socialnet-canary"]["metadata"]["annotations"]
    assert canary["nginx.ingress.kubernetes.io/canary-weight"] == "0"
    assert canary["nginx.ingress.kubernetes.io/canary-by-cookie"] == "socialnet-canary"
    assert "nginx.ingress.kubernetes.io/canary-by-header" not in canary
    main = found["Ingress/socialnet"]["metadata"].get("annotations", {})
    assert not [key for key in main if "affinity" in key]
    # No traffic policy: the weight alone, as before.
    plain = kinds(render(helm, "production", {"canary": {"enabled": True, "tag": "1.3.0"}}))
    annotations = plain["Ingress/socialnet-canary"]["metadata"]["annotations"]
    assert not [key for key in annotations if "by-" in key or "affinity" in key]


def test_stable_and_canary_pods_prefer_different_nodes(helm: str) -> None:
    documents = render(helm, "production", {"canary": {"enabled": True, "tag": "1.3.0"}})
    found = kinds(documents)
    for deployment, other in (("socialnet-api", "canary"), ("socialnet-api-canary", "stable")):
        pod = found[f"Deployment/{deployment}"]["spec"]["template"]["spec"]
        (term,) = pod["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"
        ]
        assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        labels = term["podAffinityTerm"]["labelSelector"]["matchLabels"]
        assert labels["socialnet.example/track"] == other
        assert labels["app.kubernetes.io/component"] == "api"
    off = render(
        helm, "production", {"canary": {"enabled": True, "tag": "1.3.0", "antiAffinity": False}}
    )
    assert "affinity" not in kinds(off)["Deployment/socialnet-api"]["spec"]["template"]["spec"]


def test_a_traffic_policy_needs_a_chart_that_knows_it(tmp_path: Path) -> None:
    """An abort to a stable release whose chart predates canary.traffic still works."""
    environment = load_environment("production")
    release = environment.release.model_copy(update={"traffic": TrafficPolicy(header="X-Canary")})
    platform = KubernetesPlatform(environment.model_copy(update={"release": release}))
    old = tmp_path / "infrastructure/helm/socialnet"
    old.mkdir(parents=True)
    schema = {"properties": {"canary": {"properties": {"weight": {"type": "integer"}}}}}
    (old / "values.schema.json").write_text(json.dumps(schema))
    assert platform._traffic_values(tmp_path, canary=False) is None
    with pytest.raises(PlatformError, match=r"release\.traffic needs a chart with canary\.traffic"):
        platform._traffic_values(tmp_path, canary=True)
