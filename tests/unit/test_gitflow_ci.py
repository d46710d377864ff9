"""`.gitlab-ci.yml`: valid YAML with the stages and jobs the gitflow mapping needs.

GitLab's `rules:if` expressions are evaluated here for the subset the file uses (`==`, `=~`, `&&`,
`||`, bare variables), so the test follows a ref through the pipeline as GitLab would.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from socialnet_ops.core.gitflow import GitflowMapping, load_mapping
from socialnet_ops.core.paths import repo_root

pytestmark = pytest.mark.unit

STAGES = ["lint", "test", "build", "deploy"]
HIDDEN = ("stages", "workflow", "variables", "default", "include")


@pytest.fixture(scope="module")
def ci() -> dict[str, Any]:
    document = yaml.safe_load((repo_root() / ".gitlab-ci.yml").read_text())
    assert isinstance(document, dict)
    return document


def _term(term: str, variables: dict[str, str]) -> bool:
    term = term.strip()
    if match := re.fullmatch(r'\$(\w+)\s*==\s*"([^"]*)"', term):
        return variables.get(match[1], "") == match[2]
    if match := re.fullmatch(r"\$(\w+)\s*=~\s*/(.*)/", term):
        return re.search(match[2], variables.get(match[1], "")) is not None
    if match := re.fullmatch(r"\$(\w+)", term):
        return bool(variables.get(match[1]))
    raise AssertionError(f"unsupported rules:if term {term!r}; extend the test's evaluator")


def evaluate(expression: str, variables: dict[str, str]) -> bool:
    return any(
        all(_term(term, variables) for term in part.split("&&")) for part in expression.split("||")
    )


def runs(rules: list[dict[str, Any]] | None, variables: dict[str, str], changed: set[str]) -> bool:
    """GitLab's first-match semantics; `changes` matched with a simple `prefix/**/*` glob."""
    if rules is None:
        return True
    for rule in rules:
        if "if" in rule and not evaluate(rule["if"], variables):
            continue
        if "changes" in rule:
            prefixes = [pattern.removesuffix("**/*") for pattern in rule["changes"]]
            if not any(path.startswith(prefix) for path in changed for prefix in prefixes):
                continue
        return rule.get("when", "on_success") != "never"
    return False


def jobs(ci: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Visible jobs with their `extends` template merged in (one level is all the file uses)."""
    merged = {}
    for name, job in ci.items():
        if name in HIDDEN or name.startswith(".") or not isinstance(job, dict):
            continue
        base = ci[job["extends"]] if "extends" in job else {}
        merged[name] = {**base, **job}
    return merged


def pipeline(
    ci: dict[str, Any], variables: dict[str, str], changed: frozenset[str] = frozenset()
) -> set[str]:
    if not runs(ci["workflow"]["rules"], variables, set(changed)):
        return set()
    return {
        name for name, job in jobs(ci).items() if runs(job.get("rules"), variables, set(changed))
    }


def branch(name: str) -> dict[str, str]:
    return {"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": name, "CI_COMMIT_REF_NAME": name}


def tag(name: str) -> dict[str, str]:
    return {"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_TAG": name, "CI_COMMIT_REF_NAME": name}


MERGE_REQUEST = {"CI_PIPELINE_SOURCE": "merge_request_event", "CI_MERGE_REQUEST_IID": "7"}


def test_stages_and_every_job_in_one_of_them(ci: dict[str, Any]) -> None:
    assert ci["stages"] == STAGES
    for name, job in jobs(ci).items():
        assert job.get("stage") in STAGES, f"{name}: stage {job.get('stage')!r}"
        assert job.get("script"), f"{name}: no script"
    assert {"build:api", "build:front"} <= set(jobs(ci))
    dockerfiles = {
        job["variables"]["DOCKERFILE"]
        for job in jobs(ci).values()
        if "DOCKERFILE" in job.get("variables", {})
    }
    assert dockerfiles == {"app/api/Dockerfile", "app/front/Dockerfile"}
    assert all((repo_root() / path).exists() for path in dockerfiles)


def test_each_mapped_ref_lints_tests_builds_and_notifies_its_environment(
    ci: dict[str, Any],
) -> None:
    mapping: GitflowMapping = load_mapping()
    deployments = {
        name: job["variables"]["PLATFORM_DEPLOYMENT"]
        for name, job in jobs(ci).items()
        if job["stage"] == "deploy"
    }
    examples = {"develop": branch("develop"), "main": branch("main")}
    for rule in mapping.rules:
        if rule.event in {"merge_request", "note"}:  # merge requests: their own pipeline
            continue
        if rule.match.tag:
            variables = tag("v1.2.3")
            assert re.fullmatch(rule.match.tag, "v1.2.3")
        else:
            assert rule.match.branch in examples, f"no example ref for rule {rule.name}"
            variables = examples[rule.match.branch]
        ran = pipeline(ci, variables)
        assert {"lint", "typecheck", "test", "build:api", "build:front"} <= ran, rule.name
        deploying = {deployments[name] for name in ran if name in deployments}
        assert deploying == {rule.deployment}, f"{rule.name}: deploy jobs {deploying}"


def test_a_release_tag_pattern_matches_the_mapping(ci: dict[str, Any]) -> None:
    assert "deploy:production" in pipeline(ci, tag("v10.0.1"))
    for not_a_release in ("v1.2", "v1.2.3-rc1", "release-1.2.3"):
        assert pipeline(ci, tag(not_a_release)) == set(), not_a_release


def test_other_branches_only_lint_and_test(ci: dict[str, Any]) -> None:
    assert pipeline(ci, branch("feature/login")) == {"lint", "typecheck", "test"}
    with_mr = {**branch("feature/login"), "CI_OPEN_MERGE_REQUESTS": "socialnet/socialnet!7"}
    assert pipeline(ci, with_mr) == set(), "the merge request pipeline runs instead"


def test_merge_requests_touching_terraform_notify_the_plan(ci: dict[str, Any]) -> None:
    rule = next(rule for rule in load_mapping().rules if rule.event == "merge_request")
    touching = frozenset({f"{rule.match.paths[0]}stacks/staging/main.tf"})
    assert pipeline(ci, MERGE_REQUEST, touching) == {"lint", "typecheck", "test", "plan:terraform"}
    assert pipeline(ci, MERGE_REQUEST, frozenset({"app/api/main.py"})) == {
        "lint",
        "typecheck",
        "test",
    }


def test_deploy_jobs_name_the_commit_status_the_platform_reports(ci: dict[str, Any]) -> None:
    mapping = load_mapping()
    for name, job in jobs(ci).items():
        if job["stage"] != "deploy":
            continue
        deployment = job["variables"]["PLATFORM_DEPLOYMENT"].split(" ")[0]
        assert (
            job["variables"]["STATUS_NAME"]
            == f"{mapping.status_prefix}/{deployment.split('/', 1)[1]}"
        ), name
        assert job.get("interruptible") is False, f"{name}: a notification must not be cancelled"
