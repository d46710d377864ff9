"""Policy checks on a saved Terraform plan (the engine and its choice: adapters/policies.py)."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from socialnet_ops.adapters.policies import check_plan
from socialnet_ops.core.policies import POLICY_FOLDER, PolicyVerdict
from socialnet_ops.core.stack_locks import short
from tasks.reporting import artifact_key, markdown_report


@task(name="policy-check", cache_policy=NO_CACHE)
def check_policies(env: str, plan_document: str, tree: str, sha: str | None) -> PolicyVerdict:
    """The rules of `tree`'s `infrastructure/policies/` (the target branch's) on the plan's
    JSON; any finding blocks apply. The verdict is the run's `policies-<env>` artifact."""
    logger = get_run_logger()
    source = f"{POLICY_FOLDER} at {short(sha)}" if sha else f"{POLICY_FOLDER} (working tree)"
    verdict = check_plan(Path(plan_document), Path(tree), source)
    for line in verdict.lines():
        logger.warning("%s: policy: %s", env, line)
    logger.info("%s: policies: %s", env, verdict.summary())
    markdown_report(
        artifact_key("policies", env),
        f"Policy checks of the {env} plan",
        {"source": source, "verdict": verdict.summary(), "findings": verdict.lines() or ["none"]},
    )
    return verdict
