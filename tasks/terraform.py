"""Terraform tasks: a thin wrapper over the CLI that streams every line into the run log.

`python-terraform` is not used: it buffers a command's output until the command ends (nothing
would reach the Prefect UI while an apply runs) and its defaults break on Terraform 1.x. The CLI's
own JSON (`show -json`, `output -json`) gives the structured parts.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.variables import Variable

from socialnet_ops.adapters.process import ToolError, stream
from socialnet_ops.adapters.terraform import (
    MissingCredentialsError,
    PlanSummary,
    ResourceChange,
    StateLockedError,
    TerraformConfigError,
    TerraformError,
    Workspace,
    backend_arguments,
    check_stack,
    code_fingerprint,
    declared_variables,
    infra_state,
    init_fingerprint,
    is_lock_error,
    parse_lock_holder,
    provider_mirror,
    read_plan_event,
    render_cli_config,
    shared_state_name,
    stack_variables,
    summarize_plan,
    sync_code,
    terraform_environ,
)
from socialnet_ops.core.environments import Environment, load_environment
from socialnet_ops.core.paths import environments_dir, repo_root
from socialnet_ops.platforms import platform_for
from tasks.reporting import artifact_key, markdown_report, table_report

TERRAFORM = "terraform"
# The local emulator accepts any key; real credentials must never be sent to it.
EMULATOR_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "socialnet-local",
    "AWS_SECRET_ACCESS_KEY": "socialnet-local-emulator",
}
# How long another run on this machine may keep a working directory before we give up.
WORKSPACE_WAIT_SECONDS = 900


def _source(environment: Environment) -> str:
    path = environments_dir() / f"{environment.name}.yaml"
    return str(path.relative_to(repo_root())) if path.is_relative_to(repo_root()) else str(path)


# --- where AWS is and who we are there -----------------------------------------------------------


def local_emulator_endpoint(environment: Environment) -> str:
    """The local platform's AWS emulator (moto), for environments whose cloud.endpoint is `local`."""

    try:
        return platform_for(environment).endpoints().extra["aws_endpoint_url"]
    except Exception as error:
        raise TerraformConfigError(
            f"{_source(environment)}: cloud.endpoint: local, but the local platform's AWS "
            f"emulator is not reachable ({error}); start it with `make up`"
        ) from None


def endpoint_for(environment: Environment, override: str | None = None) -> str | None:
    """The AWS endpoint: the explicit override, else AWS_ENDPOINT_URL, else the catalog's."""
    if override:
        return override
    if os.environ.get("AWS_ENDPOINT_URL"):
        return os.environ["AWS_ENDPOINT_URL"]
    if environment.cloud.endpoint == "local":
        return local_emulator_endpoint(environment)
    return environment.cloud.endpoint


def aws_environ(environment: Environment, endpoint: str | None) -> dict[str, str]:
    """Extra environment of Terraform and boto3: the endpoint and, for the emulator, its keys."""
    environ: dict[str, str] = {"AWS_REGION": environment.cloud.region}
    if endpoint:
        environ["AWS_ENDPOINT_URL"] = endpoint
    if environment.cloud.endpoint == "local":
        environ.update(EMULATOR_CREDENTIALS)
    return environ


def _boto_session(environment: Environment) -> boto3.Session:
    if environment.cloud.endpoint == "local":
        return boto3.Session(
            aws_access_key_id=EMULATOR_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=EMULATOR_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=environment.cloud.region,
        )
    return boto3.Session(region_name=environment.cloud.region)


def _state_client(environment: Environment, endpoint: str | None) -> Any:
    region = environment.terraform.backend.region or environment.cloud.region
    return _boto_session(environment).client("s3", endpoint_url=endpoint, region_name=region)


def check_credentials(environment: Environment, endpoint: str | None) -> str:
    """Who Terraform will act as; a clear error before anything runs when nobody."""
    session = _boto_session(environment)
    if session.get_credentials() is None:
        raise MissingCredentialsError(
            f"{environment.name}: no AWS credentials found; set AWS_PROFILE (or "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) for the account of "
            f"{environment.name} before provisioning"
        )
    try:
        identity = session.client("sts", endpoint_url=endpoint).get_caller_identity()
    except (ClientError, BotoCoreError) as error:
        raise MissingCredentialsError(
            f"{environment.name}: the AWS credentials were refused ({error}); renew them "
            "(aws sso login, a fresh AWS_SESSION_TOKEN, ...) and run again"
        ) from None
    return str(identity.get("Arn", "unknown"))


def _secrets() -> list[str]:
    return [
        value
        for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
        if (value := os.environ.get(name))
    ]


# --- running terraform ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """One environment's Terraform settings for one use (provision, drift, bootstrap)."""

    environment: Environment
    workspace: Workspace
    endpoint: str | None
    mirror: Path | None

    @classmethod
    def of(cls, env: str, use: str, endpoint: str | None, source: str | None = None) -> Context:
        """`source`: the tree the code comes from (the run's commit); None: the working tree."""
        environment = load_environment(env)
        workspace = Workspace.of(environment, use, Path(source) if source else None)
        return cls(environment, workspace, endpoint, provider_mirror())

    @property
    def environ(self) -> dict[str, str]:
        environ = {
            **terraform_environ(self.workspace, self.endpoint, self.mirror),
            **aws_environ(self.environment, self.endpoint),
        }
        if self.mirror is not None:
            # A plugin cache would shadow the mirror; the mirror is linked, not copied, anyway.
            environ["TF_PLUGIN_CACHE_DIR"] = ""
        return environ


def _error_block(lines: Sequence[str]) -> str:
    """Terraform's own error reports (each 'Error:' block once), for the exception message."""
    blocks: list[list[str]] = []
    for line in lines:
        if line.lstrip("│ ").startswith("Error:"):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
    if not blocks:
        return "\n".join(lines[-20:])
    unique = dict.fromkeys("\n".join(block).strip() for block in blocks)
    return "\n\n".join(unique)


def run_terraform(
    context: Context,
    arguments: Sequence[str],
    *,
    cwd: Path | None = None,
    ok_codes: Sequence[int] = (0,),
    translate: Callable[[str], str] | None = None,
) -> int:
    """`terraform -chdir=STACK ARGS`, every line into the run log; Terraform's errors raised whole.

    `translate` turns each output line into the text logged (for `-json` output).
    """
    logger = get_run_logger()
    command = [TERRAFORM, f"-chdir={cwd or context.workspace.stack_dir}", *arguments]
    logger.info("$ %s", " ".join(command[1:]))
    texts: list[str] = []

    def log(line: str) -> None:
        text = translate(line) if translate else line
        texts.append(text)
        logger.info("%s", text)

    try:
        result = stream(
            command,
            log,
            env=context.environ,
            secrets=_secrets(),
            ok_codes=ok_codes,
            keep_lines=2000,
        )
    except ToolError as error:
        tail = "\n".join(texts[-2000:]).splitlines() if translate else error.tail
        if is_lock_error(tail):
            raise StateLockedError(
                context.environment.name, parse_lock_holder(tail), _lock_wait(arguments)
            ) from None
        raise TerraformError(
            f"{context.environment.name}: terraform {arguments[0]} failed (exit "
            f"{error.returncode}):\n{_error_block(tail)}"
        ) from None
    return result.returncode


def _lock_wait(arguments: Sequence[str]) -> str:
    for argument in arguments:
        if argument.startswith("-lock-timeout="):
            return argument.split("=", 1)[1]
    return "0s"


def _capture_json(context: Context, arguments: Sequence[str]) -> Any:
    """A terraform command whose stdout is JSON data (not log material)."""
    completed = subprocess.run(
        [TERRAFORM, f"-chdir={context.workspace.stack_dir}", *arguments],
        env={**os.environ, **context.environ},
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise TerraformError(
            f"{context.environment.name}: terraform {' '.join(arguments)} failed:\n"
            f"{completed.stderr.strip()}"
        )
    return json.loads(completed.stdout)


@contextlib.contextmanager
def workspace_in_use(
    env: str, use: str, wait_seconds: float = WORKSPACE_WAIT_SECONDS
) -> Iterator[None]:
    """One run at a time per working directory on this machine (the state lock covers others)."""
    workspace = Workspace.of(load_environment(env), use)
    workspace.root.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_seconds
    with workspace.lock_file.open("a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    handle.seek(0)
                    raise TerraformError(
                        f"{env}: another {use} run on this machine keeps {workspace.root} "
                        f"({handle.read().strip() or 'holder unknown'}); waited {wait_seconds:.0f} s"
                    ) from None
                time.sleep(1)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, flow run {flow_run.get_id()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- tasks -------------------------------------------------------------------------------------


@task(name="terraform-preflight", cache_policy=NO_CACHE)
def preflight(
    env: str, endpoint: str | None = None, use: str = "provision", source: str | None = None
) -> str | None:
    """Everything that can be wrong before Terraform runs: stack, variables, endpoint, credentials.

    Returns the AWS endpoint every later step uses (None: AWS itself).
    """
    logger = get_run_logger()
    environment = load_environment(env)
    catalog = _source(environment)
    stack = check_stack(environment, catalog, Path(source) if source else None)
    resolved = endpoint_for(environment, endpoint)
    stack_variables(environment, declared_variables(stack), catalog, emulated=resolved is not None)
    identity = check_credentials(environment, resolved)
    mirror = provider_mirror()
    logger.info(
        "%s: stack %s, AWS %s as %s, providers from %s",
        env,
        environment.terraform.stack,
        resolved or f"{environment.cloud.region} (AWS)",
        identity,
        mirror or "the registry",
    )
    return resolved


@task(name="terraform-state-bucket", cache_policy=NO_CACHE)
def ensure_state_bucket(env: str, endpoint: str | None) -> str:
    """Create the state bucket with the bootstrap stack (local state) when it does not exist."""
    logger = get_run_logger()
    environment = load_environment(env)
    bucket = environment.terraform.backend.bucket
    region = environment.terraform.backend.region or environment.cloud.region
    try:
        _state_client(environment, endpoint).head_bucket(Bucket=bucket)
        logger.info("state bucket %s exists", bucket)
        return bucket
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket"}:
            raise TerraformError(
                f"{env}: cannot reach the state bucket {bucket}: {error}"
            ) from None
    logger.info("state bucket %s is missing: applying the bootstrap stack", bucket)
    context = Context.of(env, "bootstrap", endpoint)
    bootstrap = Workspace(
        env, str(Path(environment.terraform.stack).parent / "bootstrap"), context.workspace.root
    )
    context = Context(environment, bootstrap, endpoint, context.mirror)
    _prepare(context)
    variables = {
        "state_bucket": bucket,
        "region": region,
        "s3_use_path_style": endpoint is not None,
    }
    bootstrap.variables_file.write_text(json.dumps(variables, indent=2))
    # Local state, kept beside the working copy (which is re-copied on every run).
    state = bootstrap.root / "terraform.tfstate"
    run_terraform(context, ["init", "-input=false", "-no-color", f"-backend-config=path={state}"])
    run_terraform(context, ["apply", "-input=false", "-no-color", "-auto-approve"])
    return bucket


def _prepare(context: Context) -> None:
    sync_code(context.workspace)
    context.workspace.cli_config.write_text(render_cli_config(context.mirror))


@task(name="terraform-init", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def init(env: str, endpoint: str | None, use: str = "provision", source: str | None = None) -> None:
    """Copy the stack into the working directory, write its variables, `terraform init`.

    Like Terragrunt's auto-init, init is skipped when the working directory was initialized with
    this very code, lock file, backend and CLI configuration (it hashes the provider, ~2 s CPU).
    """
    context = Context.of(env, use, endpoint, source)
    workspace = context.workspace
    environment = context.environment
    _prepare(context)
    emulated = endpoint is not None
    variables = stack_variables(
        environment,
        declared_variables(context.workspace.stack_dir),
        _source(environment),
        emulated=emulated,
    )
    workspace.variables_file.write_text(json.dumps(variables, indent=2, sort_keys=True))
    backend = backend_arguments(environment, emulated=emulated)
    settings = [*backend, endpoint or ""]
    marker = workspace.initialized_marker
    fingerprint = init_fingerprint(workspace, _terraform_version(), settings)
    if workspace.is_initialized() and marker.exists() and marker.read_text() == fingerprint:
        get_run_logger().info("%s: initialized with this code and backend; not again", env)
        return
    marker.unlink(missing_ok=True)
    run_terraform(context, ["init", "-input=false", "-no-color", "-reconfigure", *backend])
    # Init writes the lock file on its first run: the fingerprint is of what it left.
    marker.write_text(init_fingerprint(workspace, _terraform_version(), settings))


@task(name="terraform-validate", cache_policy=NO_CACHE)
def validate(env: str, use: str = "provision") -> None:
    """`terraform validate`, skipped when code, variables and providers are those last validated."""
    context = Context.of(env, use, None)
    marker = context.workspace.validated_marker
    fingerprint = code_fingerprint(context.workspace, _terraform_version())
    if marker.exists() and marker.read_text() == fingerprint:
        get_run_logger().info(
            "%s: code unchanged since it last validated; not validating again", env
        )
        return
    run_terraform(context, ["validate", "-no-color"])
    marker.write_text(fingerprint)


@functools.cache
def _terraform_version() -> str:
    completed = subprocess.run(
        [TERRAFORM, "version", "-json"],
        env={**os.environ, "CHECKPOINT_DISABLE": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    return completed.stdout.strip() or completed.stderr.strip()


PlanStatus = Literal["clean", "changes"]


@dataclass(frozen=True)
class Plan:
    environment: str
    status: PlanStatus
    summary: PlanSummary
    plan_file: str
    document: str = ""  # the plan's JSON (`terraform show -json`), beside the plan file


@task(name="terraform-plan", cache_policy=NO_CACHE)
def plan(
    env: str, endpoint: str | None, use: str = "provision", lock_timeout: str = "120s"
) -> Plan:
    """`plan -detailed-exitcode -out=...`, summarized from `show -json` of the saved plan."""
    context = Context.of(env, use, endpoint)
    plan_file = context.workspace.plan_file
    plan_file.unlink(missing_ok=True)
    code = run_terraform(
        context,
        [
            "plan",
            "-input=false",
            "-no-color",
            "-detailed-exitcode",
            f"-lock-timeout={lock_timeout}",
            f"-out={plan_file}",
        ],
        ok_codes=(0, 2),
    )
    document = _capture_json(context, ["show", "-json", str(plan_file)])
    # Kept for the policy checks, which read the whole plan (a second `show` costs a provider start).
    document_file = plan_file.with_suffix(".json")
    document_file.write_text(json.dumps(document))
    summary = summarize_plan(document)
    status: PlanStatus = "changes" if code == 2 else "clean"
    get_run_logger().info("%s: %s (%s)", env, status, summary.headline())
    return Plan(env, status, summary, str(plan_file), str(document_file))


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


class ApplyRejectedError(TerraformError):
    pass


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
    context = Context.of(plan.environment, use, endpoint)
    run_terraform(
        context,
        ["apply", "-input=false", "-no-color", f"-lock-timeout={lock_timeout}", plan.plan_file],
    )


@task(name="terraform-outputs", cache_policy=NO_CACHE)
def read_outputs(env: str, endpoint: str | None, use: str = "provision") -> dict[str, Any]:
    outputs = _capture_json(Context.of(env, use, endpoint), ["output", "-json"])
    return dict(outputs)


@task(name="terraform-applied", cache_policy=NO_CACHE)
def describe_applied(
    env: str, endpoint: str | None, commit: str | None, use: str = "provision"
) -> dict[str, Any]:
    """What was applied, for the release manifest: commit, code digest, the state's serial."""
    context = Context.of(env, use, endpoint)
    state = _capture_json(context, ["state", "pull"])
    return {
        "commit": commit,
        "stack_digest": code_fingerprint(context.workspace, _terraform_version())[:16],
        "serial": state.get("serial") if isinstance(state, dict) else None,
    }


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


# --- saved plans every worker can apply ----------------------------------------------------------


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@task(name="terraform-store-plan", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def store_plan(env: str, endpoint: str | None, plan_file: str, key: str) -> str:
    """Keep a saved plan in the state bucket (as private and encrypted as the state it changes),
    so whichever worker runs the apply finds it; returns its sha256."""
    environment = load_environment(env)
    path = Path(plan_file)
    digest = file_digest(path)
    _state_client(environment, endpoint).put_object(
        Bucket=environment.terraform.backend.bucket,
        Key=key,
        Body=path.read_bytes(),
        Metadata={"sha256": digest},
    )
    get_run_logger().info(
        "%s: plan kept as s3://%s/%s", env, environment.terraform.backend.bucket, key
    )
    return digest


@task(name="terraform-fetch-plan", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def fetch_plan(env: str, endpoint: str | None, use: str, key: str, digest: str) -> str:
    """The saved plan whose sha256 is `digest`: this worker's copy, else the state bucket's.

    Anything else (another plan, a truncated download) is refused: only that plan is applied.
    """
    environment = load_environment(env)
    local = Context.of(env, use, endpoint).workspace.plan_file
    if local.exists() and file_digest(local) == digest:
        return str(local)
    bucket = environment.terraform.backend.bucket
    try:
        body = _state_client(environment, endpoint).get_object(Bucket=bucket, Key=key)["Body"]
        data = body.read()
    except ClientError as error:
        raise TerraformError(
            f"{env}: the saved plan s3://{bucket}/{key} is gone ({error})"
        ) from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise TerraformError(
            f"{env}: s3://{bucket}/{key} is not the plan that was checked (its sha256 differs)"
        )
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(data)
    get_run_logger().info("%s: plan fetched from s3://%s/%s", env, bucket, key)
    return str(local)


def read_infra_state(env: str) -> dict[str, Any] | None:
    """What the last provision of `env` stored (None before the first one)."""
    value = Variable.get(shared_state_name(env), default=None)
    return value if isinstance(value, dict) else None


# --- drift ---------------------------------------------------------------------------------------

DriftStatus = Literal["clean", "drifted", "locked", "not-provisioned"]


@dataclass(frozen=True)
class DriftReport:
    environment: str
    status: DriftStatus
    changes: list[dict[str, str]] = field(default_factory=list)
    detail: str = ""
    seconds: float = 0.0

    @property
    def addresses(self) -> list[str]:
        return [change["address"] for change in self.changes]


@task(name="drift-check", cache_policy=NO_CACHE)
def check_drift(env: str, endpoint: str | None = None, lock_timeout: str = "60s") -> DriftReport:
    """Plan one environment against reality without changing anything.

    A full plan (not `-refresh-only`): it reports what an apply would change, which is both
    drift made outside Terraform and code not yet applied, and ignores read-back noise that a
    refresh-only plan counts as a change. The state lock is taken (cheap, and a plan read during
    someone's apply would report their changes as drift); a held lock is reported, not waited out.
    """
    started = time.monotonic()
    logger = get_run_logger()
    with workspace_in_use(env, "drift"):
        resolved = preflight.fn(env, endpoint, use="drift")
        environment = load_environment(env)
        backend = environment.terraform.backend
        try:
            _state_client(environment, resolved).head_object(Bucket=backend.bucket, Key=backend.key)
        except ClientError:
            logger.warning(
                "%s: no state at s3://%s/%s: never provisioned", env, backend.bucket, backend.key
            )
            return DriftReport(env, "not-provisioned", detail="no state: never provisioned")
        init.fn(env, resolved, use="drift")
        try:
            summary = drift_plan(env, resolved, lock_timeout)
        except StateLockedError as error:
            logger.warning("%s", error)
            return DriftReport(env, "locked", detail=str(error))
    elapsed = round(time.monotonic() - started, 2)
    if not summary.has_changes:
        return DriftReport(env, "clean", seconds=elapsed)
    return DriftReport(env, "drifted", summary.rows(), summary.headline(), elapsed)


def drift_plan(env: str, endpoint: str | None, lock_timeout: str) -> PlanSummary:
    """`plan -json -detailed-exitcode`, read as it streams: no saved plan, no `show -json`."""
    context = Context.of(env, "drift", endpoint)
    changes: list[ResourceChange] = []

    def translate(line: str) -> str:
        text, change = read_plan_event(line)
        if change is not None:
            changes.append(change)
        return text

    code = run_terraform(
        context,
        [
            "plan",
            "-json",
            "-input=false",
            "-detailed-exitcode",
            f"-lock-timeout={lock_timeout}",
        ],
        ok_codes=(0, 2),
        translate=translate,
    )
    summary = PlanSummary(changes=tuple(sorted(changes, key=lambda change: change.address)))
    if code == 2 and not summary.has_changes:
        # Only output changes (a new output, say): not drift of any resource.
        get_run_logger().info("%s: only outputs would change", env)
    return summary
