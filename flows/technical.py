"""technical: install the technical cluster's tools from their upstream charts.

Prometheus + Alertmanager + Grafana (kube-prometheus-stack, with the socialnet rules and
dashboards of infrastructure/observability), Loki, the Prefect server and a Kubernetes worker,
and the webhook receiver; the list, versions and values are in deployments/values/technical.yaml.
Each release is `helm upgrade --install --wait --atomic`, so a rerun only changes what changed.
Needs a cluster and the chart repositories (internet), or SOCIALNET_CHART_MIRROR with the charts.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.common import StepClock, checked_environment
from socialnet_ops.core.environments import KubernetesPlatform as KubernetesSettings
from socialnet_ops.core.paths import repo_root
from socialnet_ops.platforms.base import PlatformError
from socialnet_ops.platforms.kubernetes.helm import Helm
from socialnet_ops.platforms.kubernetes.tools import (
    CHART_MIRROR_ENV,
    ToolRelease,
    load_tool_releases,
    observability_values,
)
from tasks.reporting import artifact_key, markdown_report


def _settings(env: str) -> KubernetesSettings:
    platform = checked_environment(env).platform
    if not isinstance(platform, KubernetesSettings):
        raise PlatformError(f"environment {env!r} is not a kubernetes environment")
    return platform


@task(name="add-chart-repositories", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def add_chart_repositories(env: str, releases: list[ToolRelease]) -> list[str]:
    """`helm repo add` + `update` for the upstream charts (none with a chart mirror)."""
    if os.environ.get(CHART_MIRROR_ENV):
        get_run_logger().info("charts come from the mirror %s", os.environ[CHART_MIRROR_ENV])
        return []
    settings = _settings(env)
    helm = Helm(settings.context, settings.namespace, "-")
    logger = get_run_logger()
    added = []
    for release in releases:
        if release.is_local or release.repository_name in added:
            continue
        assert release.repository is not None
        helm.run(
            "repo",
            "add",
            "--force-update",
            release.repository_name,
            release.repository,
            on_line=logger.info,
        )
        added.append(release.repository_name)
    if added:
        helm.run("repo", "update", *added, on_line=logger.info)
    return added


@task(name="install-tool", cache_policy=NO_CACHE)
def install_tool(env: str, release: ToolRelease) -> dict[str, Any]:
    settings = _settings(env)
    logger = get_run_logger()
    helm = Helm(settings.context, release.namespace, release.name)
    chart, version = release.chart_reference()
    arguments = [
        "upgrade", "--install", release.name, chart,
        "--create-namespace", "--wait", "--atomic",
        "--timeout", f"{max(60, round(settings.rollout_timeout))}s",
        "--values", str(repo_root() / release.values),
    ]  # fmt: skip
    if version:
        arguments += ["--version", version]
    with tempfile.TemporaryDirectory(prefix="technical-") as folder:
        if release.observability:
            overlay = Path(folder) / "observability.json"
            overlay.write_text(json.dumps(observability_values()))
            arguments += ["--values", str(overlay)]
        helm.run(*arguments, on_line=logger.info)
    revision = helm.history()[-1]
    logger.info("%s: revision %d %s", release.name, revision.revision, revision.status)
    return {"name": release.name, "namespace": release.namespace, "chart": release.chart,
            "version": release.version or "local", "revision": revision.revision}  # fmt: skip


@flow(name="technical", flow_run_name="technical-{env}")
def technical(env: str = "technical", only: list[str] | None = None) -> list[dict[str, Any]]:
    settings = _settings(env)
    releases = load_tool_releases(settings.values_file)
    if only:
        unknown = set(only) - {release.name for release in releases}
        if unknown:
            raise ValueError(f"only: {sorted(unknown)} are not releases of {settings.values_file}")
        releases = [release for release in releases if release.name in only]
    clock = StepClock()
    with clock("repositories"):
        add_chart_repositories(env, releases)
    installed = []
    # In order: kube-prometheus-stack first, its CRDs (ServiceMonitor) serve the others.
    for release in releases:
        with clock(release.name):
            installed.append(install_tool(env, release))
    markdown_report(
        artifact_key("technical", env),
        f"Tools installed on {env}",
        {
            "releases": [
                f"{item['name']} ({item['chart']} {item['version']}) in {item['namespace']}: revision {item['revision']}"
                for item in installed
            ],
            "timings": clock.rows(),
        },
    )
    return installed
