"""Alert rules (promtool check + unit tests), dashboards and the technical cluster's releases."""

from __future__ import annotations

import json
import subprocess

import pytest

from socialnet_ops.core.paths import repo_root
from socialnet_ops.platforms.kubernetes.tools import load_tool_releases, observability_values
from tests.support.kube_tools import require_tool

RULES = repo_root() / "infrastructure/observability/rules"
PROMTOOL_HINT = "apt-get install prometheus (Debian's package ships promtool)"


@pytest.mark.integration
def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool", PROMTOOL_HINT)
    files = sorted(str(path) for path in RULES.glob("*.rules.yaml"))
    assert files
    result = subprocess.run(
        [promtool, "check", "rules", *files], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
def test_promtool_rule_unit_tests() -> None:
    promtool = require_tool("promtool", PROMTOOL_HINT)
    tests = sorted(str(path) for path in RULES.glob("*.rules.test.yaml"))
    result = subprocess.run(
        [promtool, "test", "rules", *tests], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.unit
def test_rules_cover_the_issue() -> None:
    groups = observability_values()["additionalPrometheusRulesMap"]["socialnet"]["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    assert {
        "SocialnetApiErrorRatioHigh",
        "SocialnetApiLatencyHigh",
        "SocialnetBackupTooOld",
        "SocialnetWalArchivingFailing",
        "SocialnetReplicaRestarting",
    } <= alerts


@pytest.mark.unit
def test_dashboards_are_grafana_json() -> None:
    for path in (repo_root() / "infrastructure/observability/dashboards").glob("*.json"):
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["panels"]
        for panel in dashboard["panels"]:
            assert all(target["expr"] for target in panel["targets"])


@pytest.mark.unit
def test_technical_releases_are_pinned() -> None:
    releases = load_tool_releases("deployments/values/technical.yaml")
    names = [release.name for release in releases]
    assert names[0] == "kube-prometheus-stack"  # its CRDs come first
    assert {"loki", "prefect-server", "prefect-worker", "webhook-receiver"} <= set(names)
    for release in releases:
        assert release.is_local or (release.version and release.repository)
