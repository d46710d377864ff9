"""The technical flow against the API emulator, with stand-in charts for the upstream ones.

The upstream charts cannot be downloaded here, so SOCIALNET_CHART_MIRROR points at stand-ins
of the same names that store the values they receive in a ConfigMap: the test checks what the
flow would give the real charts (the right values files, the socialnet rules and dashboards, the
namespaces), while helm really installs and upgrades each release. The real charts are exercised
by the opt-in suite in tests/real_cluster/.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from flows.technical import technical
from tests.support.kube_emulator import KubeEmulator
from webhooks.token import TOKEN_FILE_VARIABLE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STAND_INS = ["kube-prometheus-stack", "loki", "prefect-server", "prefect-worker"]


def write_stand_ins(folder: Path) -> Path:
    for name in STAND_INS:
        chart = folder / name
        (chart / "templates").mkdir(parents=True)
        (chart / "Chart.yaml").write_text(f"apiVersion: v2\nname: {name}\nversion: 0.0.1\n")
        (chart / "templates" / "values.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-values\n"
            "data:\n  values.json: {{ toJson .Values | quote }}\n"
        )
    return folder


def received_values(kube: KubeEmulator, namespace: str, release: str) -> dict:
    configmap = kube.get("v1", "ConfigMap", namespace, f"{release}-values")
    assert configmap is not None, f"{release} was not installed in {namespace}"
    return json.loads(configmap["data"]["values.json"])


def test_technical_flow_installs_every_tool(
    prefect_server: None, kube: KubeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOCIALNET_CHART_MIRROR", str(write_stand_ins(tmp_path / "charts")))
    installed = technical(env="technical")
    assert [item["name"] for item in installed] == [
        "kube-prometheus-stack",
        "loki",
        "prefect-server",
        "prefect-worker",
        "webhook-receiver",
        "prefect-network-policy",
    ]
    monitoring = received_values(kube, "monitoring", "kube-prometheus-stack")
    groups = monitoring["additionalPrometheusRulesMap"]["socialnet"]["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    assert {
        "SocialnetApiErrorRatioHigh",
        "SocialnetBackupTooOld",
        "SocialnetWalArchivingFailing",
    } <= alerts
    dashboards = monitoring["grafana"]["dashboards"]["socialnet"]
    assert json.loads(dashboards["socialnet-overview"]["json"])["uid"] == "socialnet-overview"
    assert monitoring["alertmanager"]["config"]["route"]["receiver"] == "prefect-webhook"
    assert received_values(kube, "logging", "loki")["deploymentMode"] == "SingleBinary"
    assert_scaled_prefect_server(received_values(kube, "prefect", "prefect-server"))
    assert_kubernetes_worker(received_values(kube, "prefect", "prefect-worker"))
    receiver = kube.get("apps/v1", "Deployment", "prefect", "webhook-receiver")
    assert receiver is not None
    assert_receiver_reads_its_token_file(receiver)
    assert_api_network_policy(kube)

    again = technical(env="technical", only=["loki"])  # a rerun upgrades in place
    assert again == [
        {
            "name": "loki",
            "namespace": "logging",
            "chart": "grafana/loki",
            "version": "6.27.0",
            "revision": 2,
        }
    ]


def assert_scaled_prefect_server(server: dict[str, Any]) -> None:
    """Prefect's scaled layout, with every secret value from a Secret (the chart's keys)."""
    assert server["server"]["replicaCount"] >= 2
    # runAsSeparateDeployment: --no-services on the API servers, a services Deployment, and the
    # prefect_redis messaging, ordering and lease-storage settings on both.
    services = server["backgroundServices"]
    assert services["runAsSeparateDeployment"] is True
    assert services["replicaCount"] == 1
    assert (
        services["messaging"]["broker"]
        == services["messaging"]["cache"]
        == ("prefect_redis.messaging")
    )
    assert services["messaging"]["docket"]["existingSecret"] == "prefect-server-redis"
    assert server["redis"]["enabled"] is True
    assert server["redis"]["auth"]["existingSecret"] == "prefect-server-redis"
    assert server["postgresql"]["enabled"] is True
    assert server["postgresql"]["auth"]["existingSecret"] == "prefect-postgresql"
    assert server["postgresql"]["primary"]["persistence"]["enabled"] is True
    assert server["externalDatabase"] == {
        "existingSecret": "prefect-postgresql",
        "connectionStringSecretKey": "connection-string",
    }
    assert server["secret"]["create"] is False  # no connection string rendered from values
    assert server["server"]["basicAuth"] == {"enabled": True, "existingSecret": "prefect-auth"}
    ingress = server["ingress"]
    assert ingress["enabled"] and ingress["tls"] is True
    assert "cert-manager.io/cluster-issuer" in ingress["annotations"]  # the chart's TLS condition
    assert not literal_secrets(server)


def assert_kubernetes_worker(worker: dict[str, Any]) -> None:
    assert worker["worker"]["config"] == {"workPool": "kubernetes", "type": "kubernetes"}
    assert worker["worker"]["image"]["prefectTag"].endswith("-kubernetes")
    api = worker["worker"]["selfHostedServerApiConfig"]
    assert api["basicAuth"] == {"enabled": True, "existingSecret": "prefect-auth"}
    assert api["apiUrl"].startswith("http://prefect-server.prefect.svc")
    assert not literal_secrets(worker)


def literal_secrets(values: Any, path: str = "") -> list[str]:
    """Paths of values that would put a credential in the values file itself."""
    found = []
    if isinstance(values, dict):
        for key, value in values.items():
            where = f"{path}.{key}"
            if key in {"password", "authString", "connectionString", "url"} and value:
                found.append(where)
            found += literal_secrets(value, where)
    elif isinstance(values, list):
        for index, value in enumerate(values):
            found += literal_secrets(value, f"{path}[{index}]")
    return found


def assert_receiver_reads_its_token_file(deployment: dict[str, Any]) -> None:
    """The receiver's SOCIALNET_WEBHOOK_TOKEN_FILE is a file the init container copies from the
    Secret into a volume the receiver mounts; no token reaches the environment."""
    pod = deployment["spec"]["template"]["spec"]
    receiver = next(c for c in pod["containers"] if c["name"] == "receiver")
    env = {item["name"]: item for item in receiver["env"]}
    assert "envFrom" not in receiver
    token_file = PurePosixPath(env[TOKEN_FILE_VARIABLE]["value"])
    mounts = {m["mountPath"]: m["name"] for m in receiver["volumeMounts"]}
    tokens_volume = mounts[str(token_file.parent)]
    copier = next(c for c in pod["initContainers"] if c["name"] == "copy-tokens")
    copier_mounts = {m["name"]: m["mountPath"] for m in copier["volumeMounts"]}
    assert copier_mounts[tokens_volume] == str(token_file.parent)
    volumes = {v["name"]: v for v in pod["volumes"]}
    (secret_volume,) = copier_mounts.keys() - {tokens_volume}
    secret = volumes[secret_volume]["secret"]
    assert secret["secretName"] == "webhook-receiver"
    assert {"key": "webhook-token", "path": "webhook-token"} in secret["items"]
    assert f"{copier_mounts[secret_volume]}/webhook-token={token_file}" in copier["args"]
    assert volumes[tokens_volume]["emptyDir"]["medium"] == "Memory"
    assert env["PREFECT_API_AUTH_STRING"]["valueFrom"]["secretKeyRef"] == {
        "name": "prefect-auth",
        "key": "auth-string",
    }
    assert env["PREFECT_API_URL"]["value"].endswith(":4200/api")


def assert_api_network_policy(kube: KubeEmulator) -> None:
    policy = kube.get("networking.k8s.io/v1", "NetworkPolicy", "prefect", "prefect-api")
    assert policy is not None, "the prefect-network-policy release installs prefect-api"
    assert policy["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "prefect-server",
        "app.kubernetes.io/instance": "prefect-server",
        "app.kubernetes.io/component": "server",
    }
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 4200}]
    peers = rule["from"]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    } in peers
    names = next(p for p in peers if "podSelector" in p and "namespaceSelector" not in p)
    assert names["podSelector"]["matchExpressions"][0]["values"] == [
        "prefect-worker",
        "webhook-receiver",
    ]
    flow_runs = next(p for p in peers if "podSelector" in p and "namespaceSelector" in p)
    assert flow_runs["podSelector"]["matchExpressions"] == [
        {"key": "prefect.io/flow-run-id", "operator": "Exists"}
    ]
    assert kube.get("networking.k8s.io/v1", "NetworkPolicy", "prefect", "prefect-datastores")
