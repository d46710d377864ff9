"""Terraform's steps, on the client in `terraform`: preflight, the state bucket, init, validate,
plan, apply, outputs, saved plans every worker can apply, and the drift check.

Each logs through the task's run logger (`log`); `tasks/terraform.py` wraps them as tasks.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from socialnet_ops.adapters.postgres import RunLog
from socialnet_ops.adapters.terraform import (
    Context,
    Emulator,
    Workspace,
    backend_arguments,
    capture_json,
    check_credentials,
    check_stack,
    code_fingerprint,
    declared_variables,
    endpoint_for,
    hold_workspace,
    init_fingerprint,
    prepare,
    provider_mirror,
    run_terraform,
    state_client,
    terraform_version,
)
from socialnet_ops.core.environments import load_environment
from socialnet_ops.core.terraform import (
    DriftReport,
    Plan,
    PlanStatus,
    PlanSummary,
    ResourceChange,
    StateLockedError,
    TerraformError,
    catalog_source,
    read_plan_event,
    stack_variables,
    summarize_plan,
)


def preflight_checks(
    env: str, endpoint: str | None, source: str | None, *, emulator: Emulator, log: RunLog
) -> str | None:
    """Stack, variables, endpoint and credentials checked; the endpoint (None: AWS itself)."""
    environment = load_environment(env)
    catalog = catalog_source(environment)
    stack = check_stack(environment, catalog, Path(source) if source else None)
    resolved = endpoint_for(environment, endpoint, emulator)
    stack_variables(environment, declared_variables(stack), catalog, emulated=resolved is not None)
    identity = check_credentials(environment, resolved)
    mirror = provider_mirror()
    log.info(
        "%s: stack %s, AWS %s as %s, providers from %s",
        env,
        environment.terraform.stack,
        resolved or f"{environment.cloud.region} (AWS)",
        identity,
        mirror or "the registry",
    )
    return resolved


def create_state_bucket(env: str, endpoint: str | None, *, log: RunLog) -> str:
    """Create the state bucket with the bootstrap stack (local state) when it does not exist."""
    environment = load_environment(env)
    bucket = environment.terraform.backend.bucket
    region = environment.terraform.backend.region or environment.cloud.region
    try:
        state_client(environment, endpoint).head_bucket(Bucket=bucket)
        log.info("state bucket %s exists", bucket)
        return bucket
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket"}:
            raise TerraformError(
                f"{env}: cannot reach the state bucket {bucket}: {error}"
            ) from None
    log.info("state bucket %s is missing: applying the bootstrap stack", bucket)
    context = Context.of(env, "bootstrap", endpoint)
    bootstrap = Workspace(
        env, str(Path(environment.terraform.stack).parent / "bootstrap"), context.workspace.root
    )
    context = Context(environment, bootstrap, endpoint, context.mirror)
    prepare(context)
    variables = {
        "state_bucket": bucket,
        "region": region,
        "s3_use_path_style": endpoint is not None,
    }
    bootstrap.variables_file.write_text(json.dumps(variables, indent=2))
    # Local state, kept beside the working copy (which is re-copied on every run).
    state = bootstrap.root / "terraform.tfstate"
    run_terraform(
        context, ["init", "-input=false", "-no-color", f"-backend-config=path={state}"], log=log
    )
    run_terraform(context, ["apply", "-input=false", "-no-color", "-auto-approve"], log=log)
    return bucket


def init_workspace(
    env: str, endpoint: str | None, use: str, source: str | None, *, log: RunLog
) -> None:
    """Working copy, variables file, `terraform init`: skipped when the fingerprint of code, lock
    file, backend and CLI configuration is the one the data dir was initialized with."""
    context = Context.of(env, use, endpoint, source)
    workspace = context.workspace
    environment = context.environment
    prepare(context)
    emulated = endpoint is not None
    variables = stack_variables(
        environment,
        declared_variables(context.workspace.stack_dir),
        catalog_source(environment),
        emulated=emulated,
    )
    workspace.variables_file.write_text(json.dumps(variables, indent=2, sort_keys=True))
    backend = backend_arguments(environment, emulated=emulated)
    settings = [*backend, endpoint or ""]
    marker = workspace.initialized_marker
    fingerprint = init_fingerprint(workspace, terraform_version(), settings)
    if workspace.is_initialized() and marker.exists() and marker.read_text() == fingerprint:
        log.info("%s: initialized with this code and backend; not again", env)
        return
    marker.unlink(missing_ok=True)
    run_terraform(context, ["init", "-input=false", "-no-color", "-reconfigure", *backend], log=log)
    # Init writes the lock file on its first run: the fingerprint is of what it left.
    marker.write_text(init_fingerprint(workspace, terraform_version(), settings))


def validate_workspace(env: str, use: str, *, log: RunLog) -> None:
    """`terraform validate`, skipped when code, variables and providers are those last validated."""
    context = Context.of(env, use, None)
    marker = context.workspace.validated_marker
    fingerprint = code_fingerprint(context.workspace, terraform_version())
    if marker.exists() and marker.read_text() == fingerprint:
        log.info("%s: code unchanged since it last validated; not validating again", env)
        return
    run_terraform(context, ["validate", "-no-color"], log=log)
    marker.write_text(fingerprint)


def make_plan(env: str, endpoint: str | None, use: str, lock_timeout: str, *, log: RunLog) -> Plan:
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
        log=log,
        ok_codes=(0, 2),
    )
    document = capture_json(context, ["show", "-json", str(plan_file)])
    # Kept for the policy checks, which read the whole plan (a second `show` costs a provider start).
    document_file = plan_file.with_suffix(".json")
    document_file.write_text(json.dumps(document))
    summary = summarize_plan(document)
    status: PlanStatus = "changes" if code == 2 else "clean"
    log.info("%s: %s (%s)", env, status, summary.headline())
    return Plan(env, status, summary, str(plan_file), str(document_file))


def apply_plan(
    plan: Plan, endpoint: str | None, use: str, lock_timeout: str, *, log: RunLog
) -> None:
    """Apply exactly the saved plan; a stale plan (someone applied since) is refused by Terraform."""
    context = Context.of(plan.environment, use, endpoint)
    run_terraform(
        context,
        ["apply", "-input=false", "-no-color", f"-lock-timeout={lock_timeout}", plan.plan_file],
        log=log,
    )


def output_values(env: str, endpoint: str | None, use: str) -> dict[str, Any]:
    """`terraform output -json`: {name: {value, type, sensitive}}."""
    outputs = capture_json(Context.of(env, use, endpoint), ["output", "-json"])
    return dict(outputs)


def applied_facts(env: str, endpoint: str | None, commit: str | None, use: str) -> dict[str, Any]:
    """What was applied, for the release manifest: commit, code digest, the state's serial."""
    context = Context.of(env, use, endpoint)
    state = capture_json(context, ["state", "pull"])
    return {
        "commit": commit,
        "stack_digest": code_fingerprint(context.workspace, terraform_version())[:16],
        "serial": state.get("serial") if isinstance(state, dict) else None,
    }


# --- saved plans every worker can apply ----------------------------------------------------------


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def upload_plan(env: str, endpoint: str | None, plan_file: str, key: str, *, log: RunLog) -> str:
    """The saved plan into the state bucket, for whichever worker applies it; its sha256."""
    environment = load_environment(env)
    path = Path(plan_file)
    digest = file_digest(path)
    state_client(environment, endpoint).put_object(
        Bucket=environment.terraform.backend.bucket,
        Key=key,
        Body=path.read_bytes(),
        Metadata={"sha256": digest},
    )
    log.info("%s: plan kept as s3://%s/%s", env, environment.terraform.backend.bucket, key)
    return digest


def download_plan(
    env: str, endpoint: str | None, use: str, key: str, digest: str, *, log: RunLog
) -> str:
    """This worker's copy of the plan whose sha256 is `digest`, else the bucket's; no other."""
    environment = load_environment(env)
    local = Context.of(env, use, endpoint).workspace.plan_file
    if local.exists() and file_digest(local) == digest:
        return str(local)
    bucket = environment.terraform.backend.bucket
    try:
        body = state_client(environment, endpoint).get_object(Bucket=bucket, Key=key)["Body"]
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
    log.info("%s: plan fetched from s3://%s/%s", env, bucket, key)
    return str(local)


# --- drift ---------------------------------------------------------------------------------------


def detect_drift(
    env: str,
    endpoint: str | None,
    lock_timeout: str,
    *,
    holder: str,
    emulator: Emulator,
    log: RunLog,
) -> DriftReport:
    """The drift check (see tasks.terraform.check_drift): preflight, init and a streamed plan
    under the working directory's lock, which names `holder` (the flow run)."""
    started = time.monotonic()
    with hold_workspace(env, "drift", holder):
        resolved = preflight_checks(env, endpoint, None, emulator=emulator, log=log)
        environment = load_environment(env)
        backend = environment.terraform.backend
        try:
            state_client(environment, resolved).head_object(Bucket=backend.bucket, Key=backend.key)
        except ClientError:
            log.warning(
                "%s: no state at s3://%s/%s: never provisioned", env, backend.bucket, backend.key
            )
            return DriftReport(env, "not-provisioned", detail="no state: never provisioned")
        init_workspace(env, resolved, "drift", None, log=log)
        try:
            summary = drift_plan(env, resolved, lock_timeout, log=log)
        except StateLockedError as error:
            log.warning("%s", error)
            return DriftReport(env, "locked", detail=str(error))
    elapsed = round(time.monotonic() - started, 2)
    if not summary.has_changes:
        return DriftReport(env, "clean", seconds=elapsed)
    return DriftReport(env, "drifted", summary.rows(), summary.headline(), elapsed)


def drift_plan(env: str, endpoint: str | None, lock_timeout: str, *, log: RunLog) -> PlanSummary:
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
        log=log,
        ok_codes=(0, 2),
        translate=translate,
    )
    summary = PlanSummary(changes=tuple(sorted(changes, key=lambda change: change.address)))
    if code == 2 and not summary.has_changes:
        # Only output changes (a new output, say): not drift of any resource.
        log.info("%s: only outputs would change", env)
    return summary
