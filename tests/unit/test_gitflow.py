"""The gitflow mapping: which GitLab event starts which deployment, with which parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from socialnet_ops.core.environments import load_catalog
from socialnet_ops.core.gitflow import (
    GitEvent,
    GitflowError,
    GitflowMapping,
    affected_environments,
    build_passed,
    check_against_catalog,
    context_from_tags,
    delivery_key,
    launches,
    load_mapping,
    matching_rules,
    parse_mapping,
    promotion_refusal,
    push_version,
)
from socialnet_ops.core.ledger import Ledger, ReleaseRecord
from tests.integration.webhooks import payloads
from webhooks.gitlab import PayloadError, parse_event

pytestmark = pytest.mark.unit

SHA = "3f1c2a9b7d4e5f60718293a4b5c6d7e8f9012345"


@pytest.fixture(scope="module")
def mapping() -> GitflowMapping:
    return load_mapping()


@pytest.fixture(scope="module")
def stacks() -> dict[str, str]:
    return {name: env.terraform.stack for name, env in load_catalog().items()}


def event(kind: str, **fields: Any) -> GitEvent:
    base: dict[str, Any] = {"delivery_id": "d-1", "project_id": 42, "sha": SHA, "author": "ada"}
    return GitEvent(kind=kind, **{**base, **fields})


def only_launch(mapping: GitflowMapping, e: GitEvent) -> Any:
    rules, reason = matching_rules(mapping, e)
    assert len(rules) == 1, reason
    (launch,) = launches(mapping, rules[0], e)
    return launch


def test_the_shipped_mapping_fits_the_catalog(mapping: GitflowMapping) -> None:
    catalog = load_catalog()
    sources = {n: e.promotion.source for n, e in catalog.items() if e.promotion}
    check_against_catalog(mapping, catalog, sources)
    assert {rule.event for rule in mapping.rules} == {
        "push",
        "tag_push",
        "merge_request",
        "pipeline",
        "note",
    }


def test_a_push_to_develop_releases_that_commit_to_staging(mapping: GitflowMapping) -> None:
    launch = only_launch(mapping, event("push", branch="develop"))
    assert launch.deployment == "release/release-staging"
    assert launch.parameters == {
        "env": "staging",
        "version": f"develop-{SHA[:8]}",
        "ref": SHA,
        "take_backup": False,
    }
    assert launch.status_name == "socialnet-ops/release-staging"
    assert launch.idempotency_key == "gitlab:push:d-1:release/release-staging"
    assert launch.gitlab["sha"] == SHA and launch.gitlab["author"] == "ada"
    assert {
        "gitlab",
        f"gitlab.sha:{SHA}",
        "gitlab.ref:develop",
        "gitlab.author:ada",
        "gitlab.event_id:d-1",
        "gitflow:develop-to-staging",
    } <= set(launch.tags)
    assert context_from_tags(launch.tags)["status_name"] == launch.status_name


def test_a_release_tag_canaries_the_exact_commit_to_production(mapping: GitflowMapping) -> None:
    launch = only_launch(mapping, event("tag_push", tag="v1.4.2"))
    assert launch.deployment == "canary/canary-production"
    assert launch.parameters == {"env": "production", "version": "v1.4.2", "ref": SHA}
    assert launch.requires_promotion


def test_a_green_pipeline_on_main_puts_the_release_candidate_on_staging(
    mapping: GitflowMapping,
) -> None:
    launch = only_launch(mapping, event("pipeline", branch="main", pipeline_status="success"))
    assert launch.deployment == "release/release-staging"
    assert launch.parameters["version"] == f"main-{SHA[:8]}"
    assert launch.idempotency_key.startswith("gitlab:pipeline:")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"kind": "push", "branch": "feature/login"}, "branch 'feature/login'"),
        ({"kind": "push", "branch": "main"}, "branch 'main'"),
        ({"kind": "tag_push", "tag": "v1.2"}, "tag 'v1.2'"),
        ({"kind": "tag_push", "tag": "release-1.2.3"}, "tag 'release-1.2.3'"),
        ({"kind": "pipeline", "branch": "main", "pipeline_status": "failed"}, "pipeline"),
        ({"kind": "pipeline", "branch": "main", "pipeline_status": "running"}, "pipeline"),
        ({"kind": "pipeline", "tag": "v1.2.3", "pipeline_status": "success"}, "pipeline"),
        ({"kind": "push", "branch": "develop", "sha": "0" * 40}, "was deleted"),
        ({"kind": "merge_request", "branch": "f", "merge_request_iid": 3, "action": "close"}, "!3"),
        (
            {"kind": "merge_request", "branch": "f", "merge_request_iid": 3, "action": "update"},
            "!3",
        ),
    ],
)
def test_refs_and_actions_outside_the_mapping_are_ignored_with_a_reason(
    mapping: GitflowMapping, fields: dict[str, Any], reason: str
) -> None:
    rules, why = matching_rules(mapping, event(**fields))
    assert rules == [] and reason in why


def test_only_listed_projects_start_anything(mapping: GitflowMapping) -> None:
    locked = mapping.model_copy(update={"projects": ["socialnet/socialnet"]})
    assert matching_rules(
        locked, event("push", branch="develop", project_path="socialnet/socialnet")
    )[0]
    rules, why = matching_rules(locked, event("push", branch="develop", project_path="evil/fork"))
    assert rules == [] and "evil/fork" in why


def test_a_merge_request_plans_the_stacks_it_touches(
    mapping: GitflowMapping, stacks: dict[str, str]
) -> None:
    e = event(
        "merge_request", branch="f", merge_request_iid=7, action="open", target_branch="develop"
    )
    (rule,) = matching_rules(mapping, e)[0]
    assert rule.needs_changed_paths
    planned = launches(
        mapping, rule, e, ["infrastructure/terraform/stacks/staging/main.tf"], stacks
    )
    # The head commit, and the merge request as numbers (the deployment's schema wants integers).
    assert [(p.deployment, p.parameters) for p in planned] == [
        (
            "provision/provision-staging",
            {
                "env": "staging",
                "apply_changes": False,
                "ref": SHA,
                "merge_request": 7,
                "project_id": 42,
            },
        )
    ]
    assert planned[0].post_note and planned[0].gitlab["merge_request_iid"] == "7"
    assert planned[0].idempotency_key == "gitlab:merge_request:d-1:provision/provision-staging"
    everything = launches(
        mapping, rule, e, ["infrastructure/terraform/modules/dns/main.tf"], stacks
    )
    assert [p.environment for p in everything] == ["staging", "production", "technical"]
    assert launches(mapping, rule, e, ["app/api/main.py", "README.md"], stacks) == []
    with pytest.raises(ValueError, match="changed paths"):
        launches(mapping, rule, e)


def test_an_update_plans_again_only_when_commits_were_added(mapping: GitflowMapping) -> None:
    base = {"branch": "f", "merge_request_iid": 7, "target_branch": "develop"}
    assert matching_rules(mapping, event("merge_request", action="update", oldrev=SHA, **base))[0]
    assert not matching_rules(mapping, event("merge_request", action="update", **base))[0]


def test_affected_environments_ignore_stacks_outside_the_rule(
    mapping: GitflowMapping, stacks: dict[str, str]
) -> None:
    rule = next(r for r in mapping.rules if r.event == "merge_request")
    paths = [
        "infrastructure/terraform/stacks/local/main.tf",
        "infrastructure/terraform/stacks/bootstrap/x.tf",
    ]
    assert affected_environments(rule, paths, stacks) == []
    assert affected_environments(
        rule, ["infrastructure/terraform/stacks/production/variables.tf"], stacks
    ) == ["production"]


def test_push_versions_fit_the_release_version_rules() -> None:
    assert push_version("develop", SHA) == "develop-3f1c2a9b"
    assert push_version("feature/Login page", SHA) == "feature-Login-page-3f1c2a9b"
    long = push_version("x" * 100, SHA)
    assert len(long) == 64 and long.endswith("-3f1c2a9b")


def test_the_delivery_key_prefers_gitlabs_retry_stable_ids() -> None:
    assert delivery_key("idem-1", "uuid-1", b"{}") == "idem-1"
    assert delivery_key(None, "uuid-1", b"{}") == "uuid-1"
    assert delivery_key(None, None, b"{}") == delivery_key("", " ", b"{}")
    assert delivery_key(None, None, b"{}").startswith("sha256-")
    assert delivery_key(None, None, b"{}") != delivery_key(None, None, b"[]")


def record(version: str, sha: str) -> ReleaseRecord:
    return ReleaseRecord(version=version, git_sha=sha, ref=sha, strategy="rolling")


def test_promotion_needs_the_exact_commit_in_the_source_ledger() -> None:
    ledger = (
        Ledger(environment="staging")
        .with_stable(record("a", "1" * 40))
        .with_stable(record("b", "2" * 40))
    )
    assert build_passed(ledger, "1" * 40) and build_passed(ledger, "2" * 40)
    assert promotion_refusal("staging", ledger, "2" * 40) is None
    refusal = promotion_refusal("staging", ledger, SHA)
    assert refusal is not None and SHA[:8] in refusal and "deploy it to staging first" in refusal
    assert promotion_refusal("staging", Ledger(environment="staging"), SHA) is not None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"event": "push", "match": {"tag": "v.*"}}, "rules[0]: match.tag does not apply to push"),
        ({"event": "push", "match": {}}, "match.branch is required"),
        ({"match": {"branch": "(unclosed"}}, "rules[0].match.branch: '(unclosed' is not a regular"),
        ({"parameters": {"env": "staging", "version": "{nope}"}}, "parameters.version"),
        ({"parameters": {"version": "x"}}, "parameters.env is required"),
        ({"deployment": "deploy-staging"}, "rules[0].deployment"),
        ({"deployment": "provision/provision-{environment}"}, "`{environment}` and `environments`"),
        ({"colour": "blue"}, "rules[0].colour: unknown key"),
    ],
)
def test_mapping_errors_name_the_file_and_the_key(change: dict[str, Any], message: str) -> None:
    rule = {
        "name": "r",
        "event": "push",
        "match": {"branch": "develop"},
        "deployment": "release/release-staging",
        "parameters": {"env": "staging"},
        **change,
    }
    with pytest.raises(GitflowError) as error:
        parse_mapping({"rules": [rule]}, "deployments/gitflow.yaml")
    assert str(error.value).startswith("deployments/gitflow.yaml: ")
    assert message in str(error.value)


def test_mapping_names_must_exist_in_the_catalog(tmp_path: Path) -> None:
    path = tmp_path / "gitflow.yaml"
    path.write_text(
        "rules:\n  - {name: r, event: tag_push, match: {tag: 'v.*'}, requires_promotion: true,\n"
        "     deployment: canary/canary-staging, parameters: {env: staging}}\n"
    )
    with pytest.raises(
        GitflowError,
        match=r"rules\[0\] \(r\): requires_promotion, but environment 'staging' has no promotion.source",
    ):
        check_against_catalog(load_mapping(path), ["staging"], {})
    with pytest.raises(GitflowError, match="'qa' is not in the catalog"):
        check_against_catalog(
            parse_mapping(
                {
                    "rules": [
                        {
                            "name": "q",
                            "event": "push",
                            "match": {"branch": "qa"},
                            "deployment": "deploy/deploy-qa",
                            "parameters": {"env": "qa"},
                        }
                    ]
                },
                "x",
            ),
            ["staging"],
            {},
        )
    path.write_text("rules: [")
    with pytest.raises(GitflowError, match="not valid YAML"):
        load_mapping(path)


# --- GitLab payloads -> events ---------------------------------------------------------------------


def test_documented_payloads_become_events() -> None:
    push = parse_event("push", payloads.push("develop", SHA), "d")
    assert (push.kind, push.branch, push.sha, push.author, push.project_id) == (
        "push",
        "develop",
        SHA,
        "ada",
        42,
    )
    tag = parse_event("tag_push", payloads.tag_push("v1.0.0", SHA, annotated=True), "d")
    assert (tag.tag, tag.sha) == ("v1.0.0", SHA), (
        "an annotated tag deploys the commit, not the tag object"
    )
    mr = parse_event(
        "merge_request", payloads.merge_request(5, SHA, "update", oldrev="a" * 40), "d"
    )
    assert (mr.merge_request_iid, mr.action, mr.oldrev, mr.sha, mr.author) == (
        5,
        "update",
        "a" * 40,
        SHA,
        "grace",
    )
    pipe = parse_event("pipeline", payloads.pipeline("main", SHA), "d")
    assert (pipe.branch, pipe.tag, pipe.pipeline_status) == ("main", None, "success")
    on_tag = parse_event("pipeline", payloads.pipeline("v1.0.0", SHA, tag=True), "d")
    assert (on_tag.branch, on_tag.tag) == (None, "v1.0.0")
    deleted = parse_event("push", payloads.push("develop", "0" * 40), "d")
    assert deleted.sha == "0" * 40


def test_invalid_payloads_name_the_field() -> None:
    body = payloads.merge_request(5, SHA)
    del body["object_attributes"]["iid"]
    with pytest.raises(PayloadError, match=r"^object_attributes\.iid: missing"):
        parse_event("merge_request", body, "d")
    with pytest.raises(PayloadError, match="does not match the X-Gitlab-Event header"):
        parse_event("tag_push", payloads.push("develop", SHA), "d")
    body = payloads.push("develop", SHA)
    body["project"]["id"] = "forty-two"
    with pytest.raises(PayloadError, match=r"^project\.id: "):
        parse_event("push", body, "d")
