"""prefect.yaml declares what users trigger: every entrypoint exists and schedules follow the catalog."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import yaml
from prefect import Flow

from socialnet_ops.core.environments import load_catalog
from socialnet_ops.core.paths import repo_root

pytestmark = pytest.mark.unit

PREFECT_YAML = yaml.safe_load((repo_root() / "prefect.yaml").read_text())
DEPLOYMENTS: list[dict[str, Any]] = PREFECT_YAML["deployments"]


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_every_deployment_points_at_a_flow_whose_parameters_it_passes(
    deployment: dict[str, Any],
) -> None:
    path, function = deployment["entrypoint"].split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, function)
    assert isinstance(flow, Flow), f"{deployment['entrypoint']} is not a Prefect flow"
    accepted = set(flow.parameters.properties)
    given = set(deployment.get("parameters", {}))
    for schedule in deployment.get("schedules", []):
        given |= set(schedule.get("parameters", {}))
    assert given <= accepted, (
        f"{deployment['name']}: {given - accepted} are not parameters of {flow.name}"
    )
    assert deployment["work_pool"]["name"] == "socialnet"


def test_deployment_names_are_unique() -> None:
    names = [deployment["name"] for deployment in DEPLOYMENTS]
    assert len(names) == len(set(names))


def test_every_environment_can_be_deployed_and_rolled_back_except_technical() -> None:
    names = {deployment["name"] for deployment in DEPLOYMENTS}
    for environment in load_catalog():
        if environment == "technical":
            continue
        assert {f"deploy-{environment}", f"rollback-{environment}"} <= names


def test_canary_deployments_exist_for_every_canary_policy() -> None:
    names = {deployment["name"] for deployment in DEPLOYMENTS}
    for environment in load_catalog().values():
        if environment.release.strategy == "canary":
            assert f"canary-{environment.name}" in names


def test_drift_schedules_follow_the_catalog() -> None:
    drift = next(deployment for deployment in DEPLOYMENTS if deployment["name"] == "drift")
    scheduled = {
        env: schedule["cron"]
        for schedule in drift["schedules"]
        for env in schedule["parameters"]["envs"]
    }
    expected = {
        name: env.drift_schedule for name, env in load_catalog().items() if env.drift_schedule
    }
    assert scheduled == expected


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("backup", "schedule"),
        ("base-backup", "base_backup_schedule"),
        ("restore-drill", "drill_schedule"),
        ("backup-marker", "physical.marker_schedule"),
        ("pitr-drill", "physical.drill_schedule"),
    ],
)
def test_backup_schedules_follow_the_catalog(kind: str, field: str) -> None:
    """A scheduled deployment per environment whose policy sets the schedule; none otherwise."""
    by_name = {deployment["name"]: deployment for deployment in DEPLOYMENTS}
    for environment in load_catalog().values():
        if environment.backup is None:
            continue
        cron: object = environment.backup
        for part in field.split("."):
            cron = getattr(cron, part)
        deployment = by_name.get(f"{kind}-{environment.name}")
        if cron is None:
            assert deployment is None or not deployment.get("schedules"), deployment
            continue
        assert deployment is not None, f"{kind}-{environment.name} missing from prefect.yaml"
        assert [schedule["cron"] for schedule in deployment["schedules"]] == [cron]
