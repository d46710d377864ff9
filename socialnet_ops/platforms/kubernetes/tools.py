"""The technical cluster's tool releases (deployments/values/technical.yaml) and the values this
project adds to them: the socialnet alert rules and Grafana dashboards of infrastructure/observability.

No Prefect here; flows/technical.py runs these with helm.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from socialnet_ops.core.paths import repo_root
from socialnet_ops.platforms.base import PlatformError

OBSERVABILITY = Path("infrastructure/observability")
# A folder of charts named like the upstream ones (<folder>/<chart name>) used instead of the
# repositories: an air-gapped mirror, or the tests' stand-ins.
CHART_MIRROR_ENV = "SOCIALNET_CHART_MIRROR"


@dataclass(frozen=True)
class ToolRelease:
    name: str
    chart: str
    namespace: str
    values: str
    repository: str | None = None
    version: str | None = None
    observability: bool = False

    @property
    def is_local(self) -> bool:
        return self.chart.startswith("./")

    @property
    def repository_name(self) -> str:
        return self.chart.split("/", 1)[0]

    def chart_reference(self) -> tuple[str, str | None]:
        """(chart argument for helm, --version or None)."""
        if self.is_local:
            return str(repo_root() / self.chart), None
        mirror = os.environ.get(CHART_MIRROR_ENV)
        if mirror:
            return str(Path(mirror) / self.chart.split("/", 1)[1]), None
        return self.chart, self.version


def load_tool_releases(values_file: str) -> list[ToolRelease]:
    path = Path(values_file)
    path = path if path.is_absolute() else repo_root() / path
    document = yaml.safe_load(path.read_text()) or {}
    releases = []
    for index, entry in enumerate(document.get("releases") or []):
        try:
            release = ToolRelease(**entry)
        except TypeError as error:
            raise PlatformError(f"{values_file}: releases[{index}]: {error}") from None
        if not release.is_local and not (release.repository and release.version):
            raise PlatformError(
                f"{values_file}: releases[{index}] ({release.name}): an upstream chart needs "
                "repository and a pinned version"
            )
        if not (repo_root() / release.values).is_file():
            raise PlatformError(
                f"{values_file}: releases[{index}]: {release.values} does not exist"
            )
        releases.append(release)
    if not releases:
        raise PlatformError(f"{values_file}: no releases listed")
    return releases


def observability_values() -> dict[str, Any]:
    """kube-prometheus-stack values carrying the socialnet rules and dashboards."""
    folder = repo_root() / OBSERVABILITY
    rules: dict[str, Any] = {}
    for path in sorted((folder / "rules").glob("*.rules.yaml")):
        rules[path.name.removesuffix(".rules.yaml")] = yaml.safe_load(path.read_text())
    dashboards = {
        path.stem: {"json": path.read_text()}
        for path in sorted((folder / "dashboards").glob("*.json"))
    }
    for name, dashboard in dashboards.items():
        json.loads(dashboard["json"])  # a broken dashboard fails here, not in Grafana
        if not name:
            raise PlatformError("a dashboard file without a name")
    return {
        "additionalPrometheusRulesMap": rules,
        "grafana": {
            "dashboardProviders": {
                "socialnet.yaml": {
                    "apiVersion": 1,
                    "providers": [
                        {
                            "name": "socialnet",
                            "folder": "socialnet",
                            "type": "file",
                            "options": {"path": "/var/lib/grafana/dashboards/socialnet"},
                        }
                    ],
                }
            },
            "dashboards": {"socialnet": dashboards},
        },
    }
