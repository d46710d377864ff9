"""The technical flow against the API emulator, with stand-in charts for the upstream ones.

The upstream charts cannot be downloaded here, so SOCIALNET_CHART_MIRROR points at stand-ins
of the same names that store the values they receive in a ConfigMap: the test checks what the
flow would give the real charts (the right values files, the socialnet rules and dashboards, the
namespaces), while helm really installs and upgrades each release. The real charts are exercised
by the opt-in suite in tests/real_cluster/.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.technical import technical
from tests.support.kube_emulator import KubeEmulator

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
    worker = received_values(kube, "prefect", "prefect-worker")
    assert worker["worker"]["config"]["type"] == "kubernetes"
    assert kube.get("apps/v1", "Deployment", "prefect", "webhook-receiver") is not None

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
