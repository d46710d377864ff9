"""`socialnet-ops`: the command line in front of every flow.

Imports of Prefect, the flows (through control/registry.py) and the other control modules sit
inside the commands that need them, on purpose: Prefect reads its settings once, at import, and
`main` must set them first (so the CLI never starts a Prefect server of its own); and a command
that runs no flow (`status`, `environments`, `down`) then starts in a fraction of the time.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar, cast

import typer
import typer.main
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

# typer vendors click privately (0.29): these are what a non-standalone run raises.
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.exceptions import Abort

from socialnet_ops.adapters.builds import BuildError, check_version
from socialnet_ops.adapters.process import ToolError
from socialnet_ops.adapters.source import SourceError, checkout
from socialnet_ops.core.backups import BackupError
from socialnet_ops.core.environments import (
    Environment,
    EnvironmentError,
    load_catalog,
    load_environment,
)
from socialnet_ops.core.failures import RejectedError, one_line
from socialnet_ops.platforms.base import PlatformError

R = TypeVar("R")

app = typer.Typer(
    name="socialnet-ops",
    help="The DevOps control plane of the socialnet three-tier app.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
_options = {"verbose": False}


@app.callback()
def _global_options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks of failed runs.")
    ] = False,
) -> None:
    _options["verbose"] = verbose


EnvOption = Annotated[
    str,
    typer.Option("--env", "-e", help="Environment name (deployments/environments/<name>.yaml)."),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the result as one JSON object instead of a summary.")
]
RefOption = Annotated[str | None, typer.Option(help="Git ref to build; default: the working tree.")]


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def _printed_as_json(result: Any, as_json: bool) -> bool:
    """With --json, the result as one JSON object on stdout (and nothing else there)."""
    if as_json:
        document = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
        print(json.dumps(document, indent=2, default=str))
    return as_json


@app.command()
def environments(as_json: JsonOption = False) -> None:
    """List the environments of the catalog, validated."""
    try:
        catalog = load_catalog()
    except EnvironmentError as error:
        raise _fail(str(error)) from None
    if _printed_as_json(
        {name: environment.model_dump(mode="json") for name, environment in catalog.items()},
        as_json,
    ):
        return
    table = Table("environment", "platform", "domain", "release", "backup", "promotes from")
    for environment in catalog.values():
        table.add_row(
            environment.name,
            environment.platform.kind,
            environment.domain,
            environment.release.strategy,
            environment.backup.schedule if environment.backup else "-",
            environment.promotion.source if environment.promotion else "-",
        )
    console.print(table)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable status.")] = False,
) -> None:
    """Show the environments and what is running in each."""
    from socialnet_ops.control.status import collect_status

    try:
        report = collect_status()
    except EnvironmentError as error:
        raise _fail(str(error)) from None
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    table = Table("environment", "platform", "serving", "canary", "programs", "urls")
    for row in report["environments"]:
        programs = row.get("programs") or []
        healthy = sum(1 for program in programs if program["state"] == "RUNNING")
        summary = f"{healthy}/{len(programs)} running" if programs else row["state"]
        restarts = [f"{p['name']} restarted {p['restarts']}x" for p in programs if p["restarts"]]
        if row.get("wal_archiving"):
            restarts.append(f"WAL archiving: {row['wal_archiving']}")
        for key in (
            "runtime",
            "images",
            "recorded_release",
            "manifest",
            "last_backup",
            "drift",
            "records",
        ):
            if row.get(key):
                restarts.append(f"{key.replace('_', ' ')}: {row[key]}")
        if restarts:
            summary += "\n" + "\n".join(restarts)
        table.add_row(
            row["name"],
            row["platform"],
            row.get("stable_version") or "-",
            f"{row['canary_version']} @ {row['canary_weight']}%"
            if row.get("canary_version")
            else "-",
            summary,
            "\n".join(f"{key}: {value}" for key, value in (row.get("urls") or {}).items()),
        )
    console.print(table)
    control_plane = report.get("control_plane")
    if control_plane:
        console.print(
            f"Prefect UI: {control_plane.get('ui_url', '-')}  ({control_plane.get('state')})"
        )
        if control_plane.get("webhook_url"):
            console.print(f"GitLab webhook: {control_plane['webhook_url']}")
        for alert in control_plane.get("recent_alerts") or []:
            console.print("alert", style="red", end=" ")
            console.print(
                f"{alert['received_at']} {alert['subject']}: {alert['body']}", markup=False
            )
        for line in control_plane.get("webhook_notices") or []:
            console.print(f"webhook {line}", markup=False)


def _local_platforms(env: str | None) -> list[Any]:
    from socialnet_ops.platforms import platform_for

    catalog = load_catalog()
    names = (
        [env] if env else [name for name, environment in catalog.items() if environment.is_local]
    )
    for name in names:
        if name not in catalog:
            raise _fail(f"unknown environment {name!r}; known: {', '.join(catalog)}")
    return [platform_for(catalog[name]) for name in names if catalog[name].is_local]


@app.command()
def up(
    env: Annotated[
        str | None, typer.Option("--env", "-e", help="Only this local environment.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Start the control plane (Prefect server + UI, worker) and the local platform; keep them running."""
    from socialnet_ops.control import control_plane

    # With --json the progress goes to stderr: stdout holds the JSON object only.
    say = _progress(stderr=as_json)
    started: dict[str, dict[str, str]] = {}
    try:
        # Platforms first: the local one bootstraps Vault, which holds the receiver's token.
        for platform in _local_platforms(env):
            endpoints = platform.start(progress=say)
            started[platform.environment] = {
                "app": endpoints.edge_url,
                "prometheus": endpoints.prometheus_url,
            }
            say(
                f"{platform.environment}: app {endpoints.edge_url}  prometheus {endpoints.prometheus_url}"
            )
        settings = control_plane.up(progress=say)
    except (PlatformError, control_plane.ControlPlaneError, ToolError) as error:
        raise _fail(str(error)) from None
    if _printed_as_json(
        {"prefect_ui": settings["PREFECT_UI_URL"], "environments": started}, as_json
    ):
        return
    console.print(f"[green]Prefect UI[/green]: {settings['PREFECT_UI_URL']}")
    console.print(
        f"the UI asks for a password: give it the whole line of {control_plane.stack().auth_file}",
        highlight=False,
        soft_wrap=True,
    )


def _progress(stderr: bool) -> Callable[[str], None]:
    """Progress lines, dimmed: on stdout, or on stderr when stdout carries JSON."""
    where = Console(stderr=True) if stderr else console
    return lambda line: where.print(f"[dim]{line}[/dim]", highlight=False)


@app.command()
def down(as_json: JsonOption = False) -> None:
    """Stop the local platforms and the control plane."""
    from socialnet_ops.adapters import nodes
    from socialnet_ops.control import control_plane
    from socialnet_ops.core.paths import environment_state_dir

    stopped: list[str] = []
    for platform in _local_platforms(None):
        if environment_state_dir(platform.environment).exists():
            platform.stop()
            stopped.append(platform.environment)
    control_plane.down()
    stopped.append("the control plane")
    if os.geteuid() == 0:
        for platform in _local_platforms(None):
            if nodes.down(platform.environment):
                stopped.append(f"the nodes of {platform.environment}")
    if _printed_as_json({"stopped": stopped}, as_json):
        return
    for what in stopped:
        console.print(f"stopped {what}")


class _NoTracebacks(logging.Filter):
    """Keeps tracebacks (and the engine's hook chatter) off the terminal: the CLI says the
    reason in one line; the run's logs in the UI keep everything (the API handler is another
    handler: this filter does not touch what it sends)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return record.exc_info is None and not message.startswith(("Running hook", "Hook '"))


def _quiet_prefect_console() -> None:
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(
            isinstance(existing, _NoTracebacks) for existing in handler.filters
        ):
            handler.addFilter(_NoTracebacks())


def _run_url(state: Any) -> str | None:
    from prefect.settings import PREFECT_UI_URL

    run_id = getattr(getattr(state, "state_details", None), "flow_run_id", None)
    base = PREFECT_UI_URL.value()
    return f"{str(base).rstrip('/')}/runs/flow-run/{run_id}" if run_id and base else None


def _run_flow(flow_name: str, **parameters: Any) -> Any:
    """Run a flow of the registry here, reported to the control plane so it shows in the UI.
    A failure is one line and the run's link; `--verbose` adds the traceback."""
    from prefect.client.schemas.objects import State

    from socialnet_ops.control import control_plane
    from socialnet_ops.control.registry import FLOWS

    if control_plane.control_plane_status()["state"] != "running":
        raise _fail(
            "the control plane is not running: start it with `socialnet-ops up` (or `make up`)"
        )
    if not _options["verbose"]:
        _quiet_prefect_console()
    with control_plane.connected():
        # return_state=True makes the call return the run's final State (Prefect's overloads
        # do not say so for a flow of unknown signature).
        state = cast("State[Any]", FLOWS[flow_name](**parameters, return_state=True))
        url = _run_url(state)
        # Results live in the control plane's storage: read them while connected.
        if state.is_completed():
            return state.result()
        error = state.result(raise_on_failure=False)
    if _options["verbose"] and isinstance(error, BaseException):
        traceback.print_exception(error)
    reason = one_line(error if isinstance(error, BaseException) else str(state.message or ""))
    if url:
        console.print(f"run: {url}", highlight=False, soft_wrap=True)
    raise _fail(f"{flow_name} failed: {reason}")


def _checked(check: Callable[[], R]) -> R:
    """Input checked before a flow run exists: a mistake is one line, and no failed run."""
    try:
        return check()
    except (EnvironmentError, BuildError, SourceError, RejectedError, BackupError) as error:
        raise _fail(one_line(error)) from None


def _checked_environment(env: str) -> Environment:
    return _checked(lambda: load_environment(env))


def _checked_release(env: str, version: str, ref: str | None) -> None:
    _checked_environment(env)
    _checked(lambda: check_version(version))
    _checked(lambda: checkout(ref))


def _fault_settings(error_rate: float, latency_ms: int) -> dict[str, str]:
    """Fault injection baked into a build, for drills; empty for a normal release."""
    settings = {}
    if error_rate:
        settings["SOCIALNET_FAULT_ERROR_RATE"] = str(error_rate)
    if latency_ms:
        settings["SOCIALNET_FAULT_LATENCY_MS"] = str(latency_ms)
    return settings


@app.command()
def deploy(
    env: EnvOption,
    version: Annotated[str, typer.Option(help="The release's version, e.g. v2 or 1.4.0.")],
    ref: RefOption = None,
    fault_error_rate: Annotated[
        float, typer.Option(help="Fault injection (drills): share of 500s.")
    ] = 0.0,
    fault_latency_ms: Annotated[
        int, typer.Option(help="Fault injection (drills): added latency.")
    ] = 0,
    allow_contracting_migrations: bool = False,
    as_json: JsonOption = False,
) -> None:
    """Roll a release onto an environment (rolling strategy)."""
    _checked_release(env, version, ref)
    result = _run_flow(
        "deploy",
        env=env,
        version=version,
        ref=ref,
        settings=_fault_settings(fault_error_rate, fault_latency_ms),
        allow_contracting_migrations=allow_contracting_migrations,
    )
    if _printed_as_json(result, as_json):
        return
    console.print(result.summary(), highlight=False)


@app.command("diff")
def diff_command(
    env: EnvOption,
    ref: Annotated[str, typer.Option(help="The commit (sha, branch or tag) to compare.")],
    plan_infra: Annotated[bool, typer.Option(help="Plan the commit's Terraform stack.")] = True,
    check_nodes: Annotated[
        bool, typer.Option(help="Run the commit's Ansible in check mode.")
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """What releasing a commit would change where a release serves: commits, files by layer,
    chart and values, Terraform plan, Ansible check mode, pending migrations, secret versions."""
    _checked_environment(env)
    _checked(lambda: checkout(ref))
    result = _run_flow("diff", env=env, ref=ref, plan_infra=plan_infra, check_nodes=check_nodes)
    if _printed_as_json(result, as_json):
        return
    console.print(result.summary(), highlight=False)
    report = result.report()
    for section, lines in report.sections.items():
        shown = lines if isinstance(lines, list) else [lines]
        console.print(f"[bold]{section}[/bold]")
        for line in shown:
            if not line.startswith("```"):
                console.print(f"  {line}", highlight=False, markup=False)


@app.command()
def release(
    env: EnvOption,
    version: Annotated[str, typer.Option(help="The release's version, e.g. v2 or 1.4.0.")],
    ref: RefOption = None,
    provision_infra: Annotated[bool, typer.Option(help="Run the provision stage.")] = True,
    configure_nodes: Annotated[bool, typer.Option(help="Run the configure stage.")] = True,
    take_backup: Annotated[bool, typer.Option(help="Back up when released.")] = True,
    as_json: JsonOption = False,
) -> None:
    """The whole lifecycle: provision, configure, secrets, staging, gate, production, backup."""
    _checked_release(env, version, ref)
    result = _run_flow(
        "release",
        env=env,
        version=version,
        ref=ref,
        provision_infra=provision_infra,
        configure_nodes=configure_nodes,
        take_backup=take_backup,
    )
    if _printed_as_json(result, as_json):
        return
    table = Table("stage", "result", "time (s)", "detail")
    for row in result.rows:
        table.add_row(row["stage"], row["result"], str(row["seconds"]), row["detail"])
    console.print(table)
    console.print(f"[green]released[/green] {version} to {env}")


@app.command()
def configure(
    env: EnvOption,
    check: Annotated[bool, typer.Option(help="Dry run with diffs: change nothing.")] = False,
    limit: Annotated[str | None, typer.Option(help="Only these hosts or groups.")] = None,
    tags: Annotated[list[str] | None, typer.Option(help="Only tasks with these tags.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Configure an environment's nodes with the Ansible roles."""
    _checked_environment(env)
    result = _run_flow("configure", env=env, check=check, limit=limit, tags=tags)
    if _printed_as_json(result, as_json):
        return
    console.print(result.summary(), highlight=False)


@app.command()
def provision(
    env: EnvOption,
    plan_only: Annotated[bool, typer.Option(help="Stop after the plan artifact.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Plan and apply an environment's Terraform stack."""
    _checked_environment(env)
    result = _run_flow("provision", env=env, apply_changes=not plan_only)
    if _printed_as_json(result, as_json):
        return
    console.print(result.summary(), highlight=False)


@app.command()
def canary(
    env: EnvOption,
    version: Annotated[str, typer.Option(help="The release's version.")],
    ref: RefOption = None,
    as_json: JsonOption = False,
) -> None:
    """Release by canary with automated analysis (promote or abort)."""
    _checked_release(env, version, ref)
    result = _run_flow("canary", env=env, version=version, ref=ref)
    if _printed_as_json(result, as_json):
        return
    console.print(result.summary(), highlight=False, soft_wrap=True)


ReasonOption = Annotated[
    str, typer.Option("--reason", help="Why: recorded with the request in the canary's report.")
]
ByOption = Annotated[
    str | None, typer.Option("--by", help="Who asks; default: the OS user running the command.")
]


def _control_canary(env: str, action: str, reason: str, by: str | None, as_json: bool) -> None:
    """Leave a promote-now or abort-now request for the canary in flight on `env`."""
    import getpass

    _checked_environment(env)
    if not reason.strip():
        raise _fail(f"{action} --env {env}: --reason is empty; say why")
    result = _run_flow(
        "canary_control", env=env, action=action, reason=reason, by=by or getpass.getuser()
    )
    if _printed_as_json(result, as_json):
        return
    gate = "; its gate answered" if result["answered_gate"] else ""
    console.print(
        f"{action} requested for canary {result['version']} on {env} (step {result['step']}, "
        f"{result['weight']}%) by {result['by']}: {result['reason']}{gate}; run "
        f"{result['canary_run']} acts on it before its next step or measurement",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def promote(
    env: EnvOption,
    reason: ReasonOption,
    full: Annotated[
        bool, typer.Option("--full", help="Skip every remaining step and promote now.")
    ] = False,
    by: ByOption = None,
    as_json: JsonOption = False,
) -> None:
    """Promote the canary in flight now (like `kubectl argo rollouts promote --full`)."""
    if not full:
        raise _fail(
            "promote: only --full is supported (skip every remaining step); to pass one gate, "
            "approve it in the Prefect UI"
        )
    _control_canary(env, "promote", reason, by, as_json)


@app.command()
def abort(
    env: EnvOption, reason: ReasonOption, by: ByOption = None, as_json: JsonOption = False
) -> None:
    """Abort the canary in flight now: weight 0, canary stopped, stable untouched."""
    _control_canary(env, "abort", reason, by, as_json)


@app.command()
def backup(
    env: EnvOption,
    control_plane: Annotated[
        bool,
        typer.Option(
            "--control-plane",
            help="Back up the control plane's own database (runs, deployments, ledgers) into "
            "ENV's bucket instead.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Back the environment's database up to its bucket now (a logical dump)."""
    _checked_backup_policy(env)
    if control_plane:
        result = _run_flow("control_plane_backup", env=env, trigger="manual")
    else:
        result = _run_flow("backup", env=env, trigger="manual")
    if _printed_as_json(result, as_json):
        return
    console.print(result.summary(), highlight=False)


@app.command("base-backup")
def base_backup(
    env: EnvOption,
    backup_type: Annotated[
        str | None,
        typer.Option(
            "--type",
            help="full, diff or incr; default: the policy's ages (physical.full_every, diff_every).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Take a physical backup now (pgBackRest), verified and copied: point-in-time recovery
    works from it on (with the archived WAL)."""
    if backup_type not in (None, "full", "diff", "incr"):
        raise _fail(f"--type: {backup_type!r} is not one of full, diff, incr")
    _checked_backup_policy(env)
    result = _run_flow("base_backup", env=env, backup_type=backup_type)
    if _printed_as_json(result, as_json):
        return
    console.print(result.summary(), highlight=False)
    if result.archiving_problem:
        console.print(f"warning: {result.archiving_problem}", style="yellow", highlight=False)


@app.command("backup-marker")
def backup_marker(env: EnvOption, as_json: JsonOption = False) -> None:
    """Record what the database holds now (row counts, checksums): pitr-drill recovers to such
    a moment and compares."""
    _checked_backup_policy(env)
    result = _run_flow("backup_marker", env=env)
    if _printed_as_json(result, as_json):
        return
    console.print(result.summary(), highlight=False)


@app.command("pitr-drill")
def pitr_drill(env: EnvOption, as_json: JsonOption = False) -> None:
    """Recover a random recorded moment into a scratch cluster, compare, report RTO and RPO."""
    _checked_backup_policy(env)
    result = _run_flow("pitr_drill", env=env)
    if _printed_as_json(result, as_json):
        return
    console.print(result.summary(), highlight=False)


def _checked_backup_policy(env: str) -> None:
    environment = _checked_environment(env)
    if environment.backup is None:
        raise _fail(
            f"deployments/environments/{env}.yaml: backup: no backup policy; add one (schedule, "
            "bucket, retention) to back this environment up"
        )


def _checked_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _fail(
            f"{option}: {value!r} is not an ISO 8601 time (e.g. 2026-12-07T10:30:00+00:00)"
        ) from None
    if moment.tzinfo is None:
        raise _fail(f"{option}: {value!r} has no time zone: add one (e.g. +00:00 or Z)")
    return moment


@app.command()
def restore(
    env: EnvOption,
    backup_id: Annotated[str, typer.Option(help="Backup id, or latest.")] = "latest",
    point_in_time: Annotated[str | None, typer.Option(help="ISO timestamp for PITR.")] = None,
    restore_point: Annotated[
        str | None, typer.Option(help="Recover to a named restore point (release-<v>-<stage>).")
    ] = None,
    latest: Annotated[
        bool, typer.Option("--latest", help="Recover to the end of the archived WAL.")
    ] = False,
    restore_dir: Annotated[
        str | None,
        typer.Option(help="Where the recovered cluster goes; an earlier restore there: delta."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Restore a dump (verified) into a new database, or recover the cluster (pgBackRest) to a
    point in time, a named restore point or the latest, on a private port."""
    moment = _checked_time(point_in_time, "--point-in-time")
    asked = [
        name
        for name, value in (
            ("--point-in-time", moment),
            ("--restore-point", restore_point),
            ("--latest", latest),
        )
        if value
    ]
    if len(asked) > 1:
        raise _fail(f"{' and '.join(asked)}: give one recovery target")
    _checked_backup_policy(env)
    result = _run_flow(
        "restore",
        env=env,
        backup_id=backup_id,
        point_in_time=moment,
        restore_point=restore_point,
        latest=latest,
        restore_dir=restore_dir,
    )
    if _printed_as_json(result, as_json):
        return
    console.print(result.summary(), highlight=False, soft_wrap=True)


@app.command()
def drift(
    envs: Annotated[list[str] | None, typer.Option("--env", "-e")] = None,
    as_json: JsonOption = False,
) -> None:
    """Plan environments against reality and report drift."""
    for name in envs or []:
        _checked_environment(name)
    result = _run_flow("drift", envs=envs)
    if _printed_as_json(result, as_json):
        return
    console.print(result.summary(), highlight=False)
    for name, stack in result.stacks.items():
        if stack.addresses or stack.status == "locked":
            console.print(
                f"{name}: {', '.join(stack.addresses[:10]) or stack.detail}", markup=False
            )


@app.command()
def rollback(
    env: EnvOption,
    version: Annotated[
        str | None, typer.Option(help="Roll back to this version; default: the previous.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Return an environment to the previous (or a named) release."""
    _checked_rollback_target(env, version)
    result = _run_flow("rollback", env=env, version=version, reason="requested from the CLI")
    if _printed_as_json(result, as_json):
        return
    console.print(result.summary(), highlight=False)


def _checked_rollback_target(env: str, version: str | None) -> None:
    """A version never released, or nothing to return to, is refused before a run exists."""
    from flows.rollback import choose_target
    from socialnet_ops.control import control_plane
    from tasks.ledger import load_ledger

    _checked_environment(env)
    if version is not None:
        _checked(lambda: check_version(version))
    if control_plane.control_plane_status()["state"] != "running":
        return  # _run_flow says so
    with control_plane.connected():
        ledger = load_ledger(env)
    _checked(lambda: choose_target(ledger, version, False))


@app.command()
def secrets(
    env: EnvOption,
    replace: Annotated[
        list[str] | None,
        typer.Option(
            help="Replace this existing secret with a new value (database, api, webhooks)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Bootstrap the environment's Vault, create missing secrets, install them on the platform."""
    _checked_environment(env)
    result = _run_flow("secrets", env=env, replace=replace or [])
    if _printed_as_json(result, as_json):
        return
    console.print(result.summary(), highlight=False, soft_wrap=True)


@app.command()
def rotate(
    env: EnvOption,
    database: Annotated[bool, typer.Option(help="Rotate the database password.")] = True,
    token_key: Annotated[bool, typer.Option(help="Rotate the token signing key.")] = True,
    overlap: Annotated[
        float | None,
        typer.Option(
            help="Seconds the previous token key stays accepted (default: until --end-overlap)."
        ),
    ] = None,
    end_overlap: Annotated[
        bool, typer.Option(help="Only drop the previous token key (ends the overlap).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Rotate secrets under traffic: database password (dual login) and token signing key."""
    _checked_environment(env)
    if end_overlap:
        database, token_key = False, False
    result = _run_flow(
        "rotate",
        env=env,
        database=database,
        token_key=token_key,
        token_overlap_seconds=overlap,
        end_overlap=end_overlap,
    )
    if _printed_as_json(result, as_json):
        return
    console.print(result.summary(), highlight=False, soft_wrap=True)


@app.command()
def demo() -> None:
    """The lifecycle on `local`, end to end; the last line is one JSON object."""
    from socialnet_ops.control.demo import run_demo

    raise typer.Exit(code=run_demo(console))


def _prefect_environment() -> None:
    """Prefect reads its settings when first imported: give every client of this process (the
    events and log workers flushing at exit included) the control plane's server, and never an
    ephemeral one of its own (it would start a server and reach for the internet)."""
    from socialnet_ops.control import control_plane

    os.environ["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] = "false"
    if control_plane.control_plane_status()["state"] == "not started":
        return
    for key, value in control_plane.prefect_settings().items():
        if key.startswith("PREFECT_") and not key.startswith("PREFECT_SERVER_"):
            os.environ.setdefault(key, value)
    # The API credential, from its 0600 file: in this process's environment only.
    auth = control_plane.client_auth()
    if auth:
        os.environ.setdefault("PREFECT_API_AUTH_STRING", auth)
        # Where configure finds it for a worker on another host (the file, never the value).
        os.environ.setdefault("SOCIALNET_PREFECT_AUTH_FILE", str(control_plane.stack().auth_file))
    # The repository, mapping and GitLab the control plane's programs use, unless set here.
    for key, value in control_plane.recorded_settings().items():
        os.environ.setdefault(key, value)


def main(argv: list[str] | None = None) -> None:
    """Run a command; a mistyped command or option is one `error:` line (exit 2), not a box."""
    _prefect_environment()
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="socialnet-ops", standalone_mode=False)
    except NoArgsIsHelpError as error:
        print(error.ctx.get_help() if error.ctx else "socialnet-ops --help")
        raise SystemExit(2) from None
    except UsageError as error:
        where = error.ctx.command_path if error.ctx else "socialnet-ops"
        console.print(
            f"[red]error:[/red] {error.format_message()} (see `{where} --help`)",
            highlight=False,
            soft_wrap=True,
        )
        raise SystemExit(2) from None
    except ClickException as error:
        console.print(f"[red]error:[/red] {error.format_message()}", highlight=False)
        raise SystemExit(error.exit_code) from None
    except Abort:
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
