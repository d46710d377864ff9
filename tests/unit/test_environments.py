"""The environment catalog: the shipped files load, and bad files say file, key and reason."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from socialnet_ops.core.environments import (
    EnvironmentError,
    KubernetesPlatform,
    LocalPlatform,
    PauseStep,
    SetWeightStep,
    UnknownEnvironmentError,
    load_catalog,
    load_environment,
)
from socialnet_ops.core.paths import environments_dir

pytestmark = pytest.mark.unit

SHIPPED = yaml.safe_load((environments_dir() / "production.yaml").read_text())


def write_catalog(tmp_path: Path, **documents: Any) -> Path:
    for name, document in documents.items():
        text = document if isinstance(document, str) else yaml.safe_dump(document)
        (tmp_path / f"{name}.yaml").write_text(text)
    return tmp_path


def error_for(tmp_path: Path, document: Any, name: str = "production") -> str:
    folder = write_catalog(tmp_path, **{name: document})
    with pytest.raises(EnvironmentError) as raised:
        load_environment(name, folder)
    return str(raised.value)


def mutated(change: Any) -> dict[str, Any]:
    document = copy.deepcopy(SHIPPED)
    change(document)
    return document


def test_the_shipped_catalog_holds_the_four_environments_of_the_design() -> None:
    catalog = load_catalog()
    assert set(catalog) == {"local", "staging", "production", "technical"}
    assert isinstance(catalog["local"].platform, LocalPlatform)
    for name in ("staging", "production", "technical"):
        assert isinstance(catalog[name].platform, KubernetesPlatform)
    production = catalog["production"]
    assert production.promotion is not None and production.promotion.source == "staging"
    assert production.release.strategy == "canary"
    assert production.backup is not None and production.backup.retention.monthly == 12
    # The production policy gates on a person before going past 25%.
    assert any(
        isinstance(step, PauseStep) and step.pause.until_approved
        for step in production.release.steps
    )


def test_durations_accept_units_and_plain_seconds() -> None:
    local = load_catalog()["local"]
    analysis_steps = [step for step in local.release.steps if not isinstance(step, SetWeightStep)]
    assert analysis_steps[0].analysis.duration == 30.0  # type: ignore[union-attr]
    production = load_catalog()["production"]
    gate = next(step for step in production.release.steps if isinstance(step, PauseStep))
    assert gate.pause.timeout == 3600.0


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.__setitem__("colour", "blue"), "colour: unknown key"),
        (lambda d: d["platform"].__setitem__("contxt", "x"), "platform.contxt: unknown key"),
        (lambda d: d.pop("domain"), "domain: missing field"),
        (lambda d: d["backup"].pop("bucket"), "backup.bucket: missing field"),
        (
            lambda d: d["platform"].__setitem__("api_replicas", "many"),
            "platform.api_replicas: 'many': Input should be a valid integer",
        ),
        (
            lambda d: d["release"]["steps"].__setitem__(2, {"set_weight": 120}),
            "release.steps[2].set_weight: 120 is above 100",
        ),
        (
            lambda d: d["release"]["steps"].__setitem__(-1, {"set_weight": 90}),
            "release: steps: the last set_weight is 90, weights must end at 100",
        ),
        (
            lambda d: d["release"]["steps"].insert(3, {"set_weight": 5}),
            "release: steps: weight goes down from 25 to 5",
        ),
        (
            lambda d: d["release"]["steps"].__setitem__(0, {"wait": 3}),
            "release.steps[0]: a step is one key of set_weight, pause, analysis, pre_rollout",
        ),
        (
            lambda d: d["release"]["steps"].__setitem__(1, {"analysis": {"duration": "soon"}}),
            "release.steps[1].analysis.duration: 'soon': 'soon' is not a duration",
        ),
        (
            lambda d: d["release"]["steps"].__setitem__(1, {"pause": {}}),
            "release.steps[1].pause: a pause needs a duration or until_approved: true",
        ),
        (
            lambda d: d["backup"].__setitem__("schedule", "61 * * * *"),
            "backup.schedule: '61 * * * *': '61 * * * *' is not a valid cron expression",
        ),
        (lambda d: d["backup"].__setitem__("schedule", "daily"), "backup.schedule: 'daily'"),
        (
            lambda d: d["release"]["analysis"].__setitem__("significance", 2),
            "release.analysis.significance: 2 is above 1",
        ),
        (
            lambda d: d["platform"].__setitem__("kind", "nomad"),
            "platform: Input tag 'nomad'",
        ),
        (
            lambda d: d["backup"].__setitem__("retention", {"daily": 0, "weekly": 0, "monthly": 0}),
            "backup.retention: retention keeps nothing",
        ),
    ],
)
def test_a_bad_file_names_the_file_the_key_and_the_reason(
    tmp_path: Path, change: Any, expected: str
) -> None:
    message = error_for(tmp_path, mutated(change))
    assert message.startswith(f"{tmp_path / 'production.yaml'}: ")
    assert expected in message


def test_invalid_yaml_and_non_mapping_files_are_reported_with_the_file(tmp_path: Path) -> None:
    assert "not valid YAML" in error_for(tmp_path, "name: [unclosed")
    assert "must hold a mapping" in error_for(tmp_path, "- just\n- a list\n")


def test_invalid_yaml_is_one_line_with_file_line_and_column(tmp_path: Path) -> None:
    message = error_for(tmp_path, "name: production\nplatform:\n  kind: [local\nfoo: 1\n")
    assert message == (
        f"{tmp_path / 'production.yaml'}:4:4: not valid YAML: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence)"
    )
    assert "<unicode string>" not in message


def test_the_name_inside_must_match_the_file_name(tmp_path: Path) -> None:
    message = error_for(tmp_path, mutated(lambda d: d.__setitem__("name", "prod")))
    assert "name: 'prod' differs from the file name 'production'" in message


def test_unknown_environment_lists_the_known_ones(tmp_path: Path) -> None:
    write_catalog(tmp_path, production=SHIPPED)
    with pytest.raises(
        UnknownEnvironmentError, match="unknown environment 'prod'; known: production"
    ):
        load_environment("prod", tmp_path)
    with pytest.raises(UnknownEnvironmentError, match="not an environment name"):
        load_environment("../etc/passwd", tmp_path)


def test_a_promotion_source_must_exist_in_the_catalog(tmp_path: Path) -> None:
    write_catalog(tmp_path, production=SHIPPED)
    with pytest.raises(
        EnvironmentError, match=r"promotion\.source: 'staging' is not an environment"
    ):
        load_catalog(tmp_path)


def test_models_are_immutable() -> None:
    production = load_catalog()["production"]
    with pytest.raises(ValueError, match="frozen"):
        production.domain = "elsewhere.example"  # type: ignore[misc]


def traffic(**policy: Any) -> Any:
    return lambda d: d["release"].__setitem__("traffic", policy)


def test_traffic_routing_by_header_cookie_and_stickiness_loads(tmp_path: Path) -> None:
    change = traffic(header="X-Canary", cookie="socialnet-canary", sticky=True)
    write_catalog(tmp_path, production=mutated(change))
    policy = load_environment("production", tmp_path).release.traffic
    assert (policy.mode, policy.header, policy.header_value) == ("weighted", "X-Canary", "always")
    assert policy.cookie == "socialnet-canary" and policy.sticky and policy.routes_by_request
    # No traffic key: weight only, as before.
    assert not load_catalog()["production"].release.traffic.routes_by_request


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            traffic(mode="split"),
            "release.traffic.mode: 'split': Input should be 'weighted' or 'ab'",
        ),
        (traffic(header="X Canary"), "release.traffic.header: 'X Canary': String should match"),
        (traffic(header="X-Canary", header_value="a b"), "release.traffic.header_value: 'a b'"),
        (traffic(cookie="a;b"), "release.traffic.cookie: 'a;b': String should match"),
        (traffic(mode="ab"), "release.traffic: mode ab routes by header or cookie only"),
        (
            traffic(mode="ab", header="X-Canary", sticky=True),
            "release.traffic: sticky keeps users on the track their weight gave",
        ),
        (traffic(cookie="socialnet-track"), "release.traffic: cookie 'socialnet-track' is the"),
        (traffic(stick=True), "release.traffic.stick: unknown key"),
        (
            lambda d: d["release"].update(strategy="rolling", traffic={"header": "X-Canary"}),
            "release: traffic: header, cookie and sticky routing need strategy: canary",
        ),
    ],
)
def test_a_bad_traffic_policy_names_the_key(tmp_path: Path, change: Any, expected: str) -> None:
    message = error_for(tmp_path, mutated(change))
    assert expected in message, message
    assert "\n" not in message
