"""Terraform tasks: each step of `socialnet_ops.adapters.terraform_plans`, every line of the CLI
into the run log.

The CLI, the working directory and AWS are `socialnet_ops.adapters.terraform`; plans, drift
reports, lock holders and the shared state are plain data in `socialnet_ops.core.terraform`. Here
is what needs Prefect: the run's logger, the plan artifact, the approval (a paused flow run) and
the shared state (a Prefect Variable).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.variables import Variable

from socialnet_ops.adapters.terraform import WORKSPACE_WAIT_SECONDS, hold_workspace
from socialnet_ops.adapters.terraform_plans import (
    applied_facts,
    apply_plan,
    create_state_bucket,
    detect_drift,
    download_plan,
    init_workspace,
    make_plan,
    output_values,
    preflight_checks,
    upload_plan,
    validate_workspace,
)
from socialnet_ops.core.environments import Environment
from socialnet_ops.core.terraform import (
    ApplyRejectedError,
    DriftReport,
    Plan,
    infra_state,
    shared_state_name,
)
from socialnet_ops.platforms import platform_for
from tasks.reporting import artifact_key, markdown_report, table_report


def _aws_emulator(environment: Environment) -> str:
    """The local platform's AWS emulator (moto), for environments whose cloud.endpoint is `local`."""
    return platform_for(environment).endpoints().extra["aws_endpoint_url"]


def _holder() -> str:
    return f"flow run {flow_run.get_id()}"


def workspace_in_use(
    env: str, use: str, wait_seconds: float = WORKSPACE_WAIT_SECONDS
) -> AbstractContextManager[None]:
    """One run at a time per working directory on this machine (the state lock covers others)."""
    return hold_workspace(env, use, _holder(), wait_seconds)


@task(name="terraform-preflight", cache_policy=NO_CACHE)
def preflight(
    env: str, endpoint: str | None = None, use: str = "provision", source: str | None = None
) -> str | None:
    """Everything that can be wrong before Terraform runs: stack, variables, endpoint, credentials.

    Returns the AWS endpoint every later step uses (None: AWS itself).
    """
    return preflight_checks(env, endpoint, source, emulator=_aws_emulator, log=get_run_logger())


@task(name="terraform-state-bucket", cache_policy=NO_CACHE)
def ensure_state_bucket(env: str, endpoint: str | None) -> str:
    """Create the state bucket with the bootstrap stack (local state) when it does not exist."""
    return create_state_bucket(env, endpoint, log=get_run_logger())


@task(name="terraform-init", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def init(env: str, endpoint: str | None, use: str = "provision", source: str | None = None) -> None:
    """Copy the stack into the working directory, write its variables, `terraform init`.

    Like Terragrunt's auto-init, init is skipped when the working directory was initialized with
    this very code, lock file, backend and CLI configuration (it hashes the provider, ~2 s CPU).
    """
    init_workspace(env, endpoint, use, source, log=get_run_logger())


@task(name="terraform-validate", cache_policy=NO_CACHE)
def validate(env: str, use: str = "provision") -> None:
    """`terraform validate`, skipped when code, variables and providers are those last validated."""
    validate_workspace(env, use, log=get_run_logger())


@task(name="terraform-plan", cache_policy=NO_CACHE)
def plan(
    env: str, endpoint: str | None, use: str = "provision", lock_timeout: str = "120s"
) -> Plan:
    """`plan -detailed-exitcode -out=...`, summarized from `show -json` of the saved plan."""
    return make_plan(env, endpoint, use, lock_timeout, log=get_run_logger())


@task(name="terraform-plan-report", cache_policy=NO_CACHE)
def publish_plan(plan: Plan, title: str) -> None:
    """The plan artifact: a table of adds, changes, replacements and destroys by address."""
    key = artifact_key("terraform-plan", plan.environment)
    if not plan.summary.rows():
        markdown_report(key, title, {"plan": "no changes", "outputs": "unchanged"})
        return
    table_report(key, plan.summary.rows(), f"{title}: {plan.summary.headline()}")


class ApplyApproval(RunInput):
    """What the approver answers in the Prefect UI."""

    approve: bool = False
    comment: str = ""


def request_approval(plan: Plan, timeout_seconds: int, poll_seconds: int = 5) -> ApplyApproval:
    """Pause the flow run until a person approves the destroys (or the timeout fails the run)."""
    logger = get_run_logger()
    destroys = [f"{change.address} ({change.action})" for change in plan.summary.destructive]
    logger.warning(
        "%s: the plan destroys or replaces %d resources: %s; waiting up to %d s for approval "
        "in the Prefect UI (Resume, approve: true)",
        plan.environment,
        len(destroys),
        ", ".join(destroys),
        timeout_seconds,
    )
    answer = pause_flow_run(
        wait_for_input=ApplyApproval,
        timeout=timeout_seconds,
        poll_interval=poll_seconds,
        key=f"approve-{plan.environment}",
    )
    if not answer.approve:
        raise ApplyRejectedError(
            f"{plan.environment}: apply rejected{': ' + answer.comment if answer.comment else ''}; "
            "nothing was changed"
        )
    logger.info("%s: destroys approved (%s)", plan.environment, answer.comment or "no comment")
    return answer


@task(name="terraform-apply", cache_policy=NO_CACHE)
def apply(
    plan: Plan, endpoint: str | None, use: str = "provision", lock_timeout: str = "120s"
) -> None:
    """Apply exactly the saved plan; a stale plan (someone applied since) is refused by Terraform."""
    apply_plan(plan, endpoint, use, lock_timeout, log=get_run_logger())


@task(name="terraform-outputs", cache_policy=NO_CACHE)
def read_outputs(env: str, endpoint: str | None, use: str = "provision") -> dict[str, Any]:
    return output_values(env, endpoint, use)


@task(name="terraform-applied", cache_policy=NO_CACHE)
def describe_applied(
    env: str, endpoint: str | None, commit: str | None, use: str = "provision"
) -> dict[str, Any]:
    """What was applied, for the release manifest: commit, code digest, the state's serial."""
    return applied_facts(env, endpoint, commit, use)


@task(name="store-infra-state", cache_policy=NO_CACHE)
def store_infra_state(
    env: str, outputs: dict[str, Any], applied: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Outputs into the shared state: the Prefect Variable `infra-<env>` (see InfraState)."""
    document = infra_state(
        env,
        outputs,
        applied_at=datetime.now(UTC).isoformat(timespec="seconds"),
        flow_run_id=str(flow_run.get_id()) if flow_run.get_id() else None,
        applied=applied,
    ).to_json()
    Variable.set(shared_state_name(env), document, overwrite=True)
    get_run_logger().info("stored %s: %d nodes", shared_state_name(env), len(document["nodes"]))
    return document


def read_infra_state(env: str) -> dict[str, Any] | None:
    """What the last provision of `env` stored (None before the first one)."""
    value = Variable.get(shared_state_name(env), default=None)
    return value if isinstance(value, dict) else None


# --- saved plans every worker can apply ----------------------------------------------------------


@task(name="terraform-store-plan", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def store_plan(env: str, endpoint: str | None, plan_file: str, key: str) -> str:
    """Keep a saved plan in the state bucket (as private and encrypted as the state it changes),
    so whichever worker runs the apply finds it; returns its sha256."""
    return upload_plan(env, endpoint, plan_file, key, log=get_run_logger())


@task(name="terraform-fetch-plan", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def fetch_plan(env: str, endpoint: str | None, use: str, key: str, digest: str) -> str:
    """The saved plan whose sha256 is `digest`: this worker's copy, else the state bucket's.

    Anything else (another plan, a truncated download) is refused: only that plan is applied.
    """
    return download_plan(env, endpoint, use, key, digest, log=get_run_logger())


# --- drift ---------------------------------------------------------------------------------------


@task(name="drift-check", cache_policy=NO_CACHE)
def check_drift(env: str, endpoint: str | None = None, lock_timeout: str = "60s") -> DriftReport:
    """Plan one environment against reality without changing anything.

    A full plan (not `-refresh-only`): it reports what an apply would change, which is both
    drift made outside Terraform and code not yet applied, and ignores read-back noise that a
    refresh-only plan counts as a change. The state lock is taken (cheap, and a plan read during
    someone's apply would report their changes as drift); a held lock is reported, not waited out.
    """
    return detect_drift(
        env,
        endpoint,
        lock_timeout,
        holder=_holder(),
        emulator=_aws_emulator,
        log=get_run_logger(),
    )
