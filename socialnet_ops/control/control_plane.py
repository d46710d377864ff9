"""The local control plane: a Prefect server (+ UI), a process worker and the webhook receiver,
run as programs of their own supervisord under `.local/control-plane/`.

`up` also registers the deployments of prefect.yaml, the `release-<env>` concurrency limits and
the automations; everything is idempotent.

Prefect is imported inside the functions that use it, never at module level: the CLI imports this
module to find the control plane and must set Prefect's settings before Prefect reads them (it
reads them once, at import; control/cli.py `_prefect_environment`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import httpx

from socialnet_ops.adapters import vault
from socialnet_ops.adapters.gitlab import read_secret_file
from socialnet_ops.adapters.process import stream
from socialnet_ops.control.prefect_stack import API_SERVERS, PrefectStack, StackPorts
from socialnet_ops.control.sqlite_history import migrate_sqlite_history
from socialnet_ops.core.environments import environment_names, load_catalog, load_environment
from socialnet_ops.core.paths import (
    control_plane_dir,
    environment_state_dir,
    repo_root,
    state_root,
)
from socialnet_ops.platforms.base import PlatformError
from socialnet_ops.platforms.local import LocalPlatform
from socialnet_ops.platforms.local.supervisor import Supervisor
from socialnet_ops.platforms.local.tools import (
    ensure_secret,
    find_binary,
    free_port,
    port_is_free,
    render,
    supervisor_quote,
    tail,
    write_atomic,
)
from tasks.hooks import ALERT_BLOCK
from webhooks.alerts import read_alerts

WORK_POOL = "socialnet"
DEFAULT_API_PORT = 4200  # the balancer's; API servers take the next ones
DEFAULT_POSTGRES_PORT = 5433
DEFAULT_REDIS_PORT = 6380
DEFAULT_WEBHOOK_PORT = 8088
DEFAULT_GIT_PORT = 9418  # git's own
# The environment whose Vault holds the receiver's token on this machine.
WEBHOOK_ENVIRONMENT = "local"
# Two API servers import Prefect at once; on 2 busy cores that has taken over 90 s.
SERVER_READY_TIMEOUT = 180.0


class ControlPlaneError(Exception):
    pass


def _state_file() -> Path:
    return control_plane_dir() / "control-plane.json"


def _read_state() -> dict[str, Any]:
    path = _state_file()
    return json.loads(path.read_text()) if path.exists() else {}


def _recorded_port(key: str, preferred: int) -> int:
    """The recorded port, or `preferred` when free, or any free port; recorded for next time."""
    state = _read_state()
    port = state.get(key)
    if port is None:
        taken = {value for name, value in state.items() if name.endswith("_port")}
        port = preferred if port_is_free(preferred) and preferred not in taken else free_port(taken)
        write_atomic(_state_file(), json.dumps({**state, key: port}, indent=2))
    return int(port)


def _api_port() -> int:
    return _recorded_port("api_port", DEFAULT_API_PORT)


def _webhook_port() -> int:
    return _recorded_port("webhook_port", DEFAULT_WEBHOOK_PORT)


def _git_port() -> int:
    return _recorded_port("git_port", DEFAULT_GIT_PORT)


def git_remote_dir() -> Path:
    """Repositories the local git remote serves (`git daemon`, read-only unless a repository
    sets daemon.receivepack): a stand-in for GitLab's, e.g. the demo's project."""
    return control_plane_dir() / "git"


def git_remote_url(name: str) -> str:
    return f"git://127.0.0.1:{_git_port()}/{name}"


def webhook_token_file() -> Path:
    """The token GitLab sends in X-Gitlab-Token, as the local platform installed it from Vault.

    Without a started local platform (a control plane alone), a generated 0600 file stands in.
    """
    from_vault = environment_state_dir(WEBHOOK_ENVIRONMENT) / "secrets" / "webhook-token"
    if from_vault.exists():
        return from_vault
    return ensure_secret(control_plane_dir() / "secrets" / "webhook-token")


def alerts_file() -> Path:
    return control_plane_dir() / "alerts.jsonl"


# Settings of the shell that runs `make up`, handed to every program: feedback to GitLab, the
# mapping, the project's repository. Recorded, so the CLI's runs use the same ones.
PASSED_SETTINGS = (
    "SOCIALNET_GITLAB_URL",
    "SOCIALNET_GITLAB_TOKEN_FILE",
    "SOCIALNET_GITFLOW_FILE",
    "SOCIALNET_SOURCE_URL",
    "SOCIALNET_SOURCE_TOKEN_FILE",
)


def _receiver_settings() -> dict[str, str]:
    settings = {
        "SOCIALNET_WEBHOOK_TOKEN_FILE": str(webhook_token_file()),
        "SOCIALNET_ALERTS_FILE": str(alerts_file()),
    }
    return {**settings, **_passed_settings()}


def _passed_settings() -> dict[str, str]:
    return {key: os.environ[key] for key in PASSED_SETTINGS if os.environ.get(key)}


def recorded_settings() -> dict[str, str]:
    """What the running control plane's programs were given (see PASSED_SETTINGS)."""
    return dict(_read_state().get("settings") or {})


def prefect_settings(port: int | None = None) -> dict[str, str]:
    """The Prefect settings every process of the control plane (and the CLI) uses."""
    port = port or _api_port()
    home = control_plane_dir() / "prefect"
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_UI_URL": f"http://127.0.0.1:{port}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "SOCIALNET_REPO": str(repo_root()),
        "SOCIALNET_STATE_DIR": str(state_root()),
    }


def client_auth() -> str | None:
    """The API credential clients send (Prefect's basic auth), once `up` has made it."""
    auth_file = stack().auth_file
    return stack().auth_string() if auth_file.exists() else None


@contextlib.contextmanager
def connected(settings: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """Runs and clients of this process report to the local control plane while inside.

    Prefect reads its environment once, at import, so changing os.environ later does nothing:
    the settings context is what counts.
    """
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_URL,
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_RESULTS_PERSIST_BY_DEFAULT,
        PREFECT_UI_URL,
        temporary_settings,
    )

    settings = settings or prefect_settings()
    updates = {
        PREFECT_API_URL: settings["PREFECT_API_URL"],
        PREFECT_UI_URL: settings["PREFECT_UI_URL"],
        PREFECT_LOCAL_STORAGE_PATH: settings["PREFECT_LOCAL_STORAGE_PATH"],
        PREFECT_RESULTS_PERSIST_BY_DEFAULT: True,
    }
    auth = settings.get("PREFECT_API_AUTH_STRING") or client_auth()
    if auth:
        updates[PREFECT_API_AUTH_STRING] = auth
    with temporary_settings(updates=updates):
        yield settings


WORKERS = 2
# This machine's workers take the pool's `default` queue: releases need its tools and state. A
# worker on another host (the `prefect_worker` Ansible role) takes the `node` queue.
HOST_QUEUE = "default"
# Runs each worker starts at once; SOCIALNET_WORKER_LIMIT=1 makes a worker stand for a one-core
# host (the control_plane_scale benchmark).
DEFAULT_WORKER_LIMIT = "4"


def stack() -> PrefectStack:
    return PrefectStack(control_plane_dir())


def _stack_ports() -> StackPorts:
    return StackPorts(
        balancer=_api_port(),
        postgres=_recorded_port("control_postgres_port", DEFAULT_POSTGRES_PORT),
        redis=_recorded_port("redis_port", DEFAULT_REDIS_PORT),
        api_servers=tuple(
            _recorded_port(f"api_server_{index}_port", DEFAULT_API_PORT + index)
            for index in range(1, API_SERVERS + 1)
        ),
    )


def _client_programs() -> dict[str, list[str]]:
    """Programs that call the API: the workers and the receiver, with the API credential only."""
    client_env = stack().client_env
    # Prefect's process worker, with runs started in a spare engine (socialnet_ops.control.worker).
    workers = {
        f"prefect-worker-{index}": stack().with_secrets(
            client_env,
            [sys.executable, "-m", "socialnet_ops.control.worker", "--pool", WORK_POOL,
             "--work-queue", HOST_QUEUE,
             "--limit", os.environ.get("SOCIALNET_WORKER_LIMIT", DEFAULT_WORKER_LIMIT),
             "--name", f"{platform.node()}-{index}"],
        )
        for index in range(1, WORKERS + 1)
    }  # fmt: skip
    return {
        **workers,
        "webhook-receiver": stack().with_secrets(client_env, receiver_command(_webhook_port())),
        "git-remote": [
            find_binary("git"), "daemon", "--reuseaddr", "--listen=127.0.0.1",
            f"--port={_git_port()}", f"--base-path={git_remote_dir()}", "--export-all",
            str(git_remote_dir()),
        ],
    }  # fmt: skip


def receiver_command(port: int) -> list[str]:
    """The webhook receiver's command line (the benchmark runs the same).

    uvicorn has no header-read timeout: webhooks.server.ReceiverProtocol (h11) closes a
    connection whose headers take over 10 s (SOCIALNET_WEBHOOK_HEADER_TIMEOUT); h11 caps them
    at 16 KiB; idle kept-alive connections close after 5 s.
    """
    return (
        f"{find_binary('uvicorn')} webhooks.app:create_app --factory --host 127.0.0.1 "
        f"--port {port} --no-access-log --timeout-graceful-shutdown 10 "
        "--http webhooks.server:ReceiverProtocol --h11-max-incomplete-event-size 16384 "
        "--timeout-keep-alive 5"
    ).split()


def _write_supervisor_config() -> Path:
    folder = control_plane_dir()
    for sub in ("programs", "logs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    # Every flow's output passes through the workers' logs: only the control plane reads them.
    (folder / "logs").chmod(0o700)
    git_remote_dir().mkdir(parents=True, exist_ok=True)
    config = folder / "supervisord.conf"
    write_atomic(config, render("supervisord.conf", environment="control-plane", state_dir=folder))
    # What the programs are given is recorded: the CLI's own runs use the same (cli.py).
    state = {**_read_state(), "settings": _passed_settings()}
    write_atomic(_state_file(), json.dumps(state, indent=2))
    return config


def _program_user() -> str:
    """Who supervisord runs a control-plane program as, unless the program names its own user."""
    return "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")


def _write_programs(
    programs: dict[str, list[str]],
    settings: dict[str, str],
    priority: int,
    user: str | None = None,
    stopsignal: str = "TERM",
) -> None:
    environment = ",".join(f"{key}={supervisor_quote(value)}" for key, value in settings.items())
    folder = control_plane_dir()
    for offset, (name, command) in enumerate(programs.items()):
        write_atomic(
            folder / "programs" / f"{name}.conf",
            render(
                "program.conf",
                environment="control-plane",
                name=name,
                command=shlex.join(command),
                directory=repo_root(),
                user=user or _program_user(),
                environment_vars=environment,
                priority=priority + offset,
                stopsignal=stopsignal,
                stopwaitsecs=30,
                state_dir=folder,
            ),
        )


REDIS_WATCH = "redis-watch"


def _write_redis_watch() -> None:
    """The event listener that restarts the services after Redis restarts (redis_watch.py)."""
    write_atomic(
        control_plane_dir() / "programs" / f"{REDIS_WATCH}.conf",
        render(
            "eventlistener.conf",
            environment="control-plane",
            name=REDIS_WATCH,
            command=shlex.join([sys.executable, "-m", "socialnet_ops.control.redis_watch"]),
            directory=repo_root(),
            user=_program_user(),
            events="PROCESS_STATE_RUNNING",
            priority=5,
            state_dir=control_plane_dir(),
        ),
    )


def _program_settings() -> dict[str, str]:
    # A changed secret changes the program files, so `up` restarts the programs that read it.
    secrets_digest = hashlib.sha256(
        stack().server_env.read_bytes() + stack().client_env.read_bytes()
    ).hexdigest()[:16]
    return {
        "SOCIALNET_SECRETS_DIGEST": secrets_digest,
        **prefect_settings(),
        **_receiver_settings(),
        "SOCIALNET_PREFECT_AUTH_FILE": str(stack().auth_file),
        # Runs the worker starts beat; the zombie automation crashes one three beats silent.
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(heartbeat_seconds()),
    }


def _remove_stale_programs(keep: set[str]) -> None:
    """Program files of an older layout (e.g. the single SQLite `prefect-server`) go away."""
    for path in (control_plane_dir() / "programs").glob("*.conf"):
        if path.stem not in keep:
            path.unlink()


def _supervisor() -> Supervisor:
    return Supervisor(control_plane_dir() / "supervisor.sock")


def _wait_for_server(api_url: str, timeout: float = SERVER_READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    logs = control_plane_dir() / "logs"
    last = [line for line in tail(logs / "prefect-api-1.log").splitlines() if line.strip()]
    raise ControlPlaneError(
        f"the Prefect API servers did not answer at {api_url} within {timeout:.0f} s; see "
        f"{logs}/prefect-api-*.log and prefect-balancer.log"
        + (f" (prefect-api-1: {last[-1].strip()[:200]})" if last else "")
    )


def _register_deployments(settings: dict[str, str]) -> bool:
    """`prefect deploy --all`, skipped when prefect.yaml and the flows are as last registered."""
    sources = [repo_root() / "prefect.yaml", *sorted((repo_root() / "flows").glob("*.py"))]
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()
    state = _read_state()
    if state.get("deployments_digest") == digest:
        return False
    # Quiet unless it fails: ToolError then carries prefect's last lines.
    stream(
        [find_binary("prefect"), "--no-prompt", "deploy", "--all"],
        lambda _line: None,
        cwd=repo_root(),
        env={**settings, "PREFECT_API_AUTH_STRING": stack().auth_string()},
    )
    write_atomic(_state_file(), json.dumps({**state, "deployments_digest": digest}, indent=2))
    return True


def _register_automations() -> list[str]:
    """A failed deploy of an environment whose policy asks for it runs its rollback deployment."""
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client
    from prefect.events.actions import RunDeployment
    from prefect.events.schemas.automations import EventTrigger, Posture

    created = []
    with get_client(sync_client=True) as client:
        for environment in load_catalog().values():
            if not environment.release.rollback_on_failure:
                continue
            try:
                deployment = client.read_deployment_by_name(f"rollback/rollback-{environment.name}")
            except Exception:  # noqa: S112 - an environment without a rollback deployment has no automation
                continue
            name = f"rollback-{environment.name}-when-deploy-fails"
            with contextlib.suppress(ValueError):
                cast(Automation, Automation.read(name=name)).delete()
            Automation(
                name=name,
                description=f"Restore the recorded stable release of {environment.name} when a deploy fails.",
                trigger=EventTrigger(
                    # Only a failure that changed something, in an environment with a recorded
                    # release, asks for a rollback (flows/common.announce_release_failure); a
                    # rollback's own failure is `socialnet.rollback.failed`, so none feeds itself.
                    expect={"socialnet.release.failed"},
                    match={
                        "prefect.resource.id": f"socialnet.environment.{environment.name}",
                        "socialnet.rollback": "requested",
                    },
                    posture=Posture.Reactive,
                    threshold=1,
                ),
                actions=[
                    RunDeployment(
                        source="selected",
                        deployment_id=deployment.id,
                        parameters={
                            "env": environment.name,
                            "to_recorded_stable": True,
                            "reason": "automation: a deploy failed",
                        },
                    )
                ],
            ).create()
            created.append(name)
    return created


DEFAULT_HEARTBEAT_SECONDS = 30


def heartbeat_seconds() -> int:
    """How often a run beats (SOCIALNET_HEARTBEAT_SECONDS, default 30, Prefect's minimum); three
    missed beats make it a zombie. Longer means fewer events, and a dead worker's runs found
    later."""
    text = os.environ.get("SOCIALNET_HEARTBEAT_SECONDS", str(DEFAULT_HEARTBEAT_SECONDS))
    if not text.isdigit() or not 30 <= int(text) <= 600:
        raise ControlPlaneError(
            f"SOCIALNET_HEARTBEAT_SECONDS={text!r}: a whole number of seconds from 30 (Prefect's "
            "minimum) to 600"
        )
    return int(text)


def _register_zombie_detection() -> list[str]:
    """A run whose process died (worker killed, machine lost) is marked Crashed after three
    missed heartbeats, so it can be rerun from the UI (Prefect's documented recipe)."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    name = "crash-zombie-flow-runs"
    zombie_after = 3 * heartbeat_seconds()
    with contextlib.suppress(ValueError):
        cast(Automation, Automation.read(name=name)).delete()
    Automation(
        name=name,
        description=f"Mark a flow run Crashed when it misses heartbeats for {zombie_after} s.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=zombie_after),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {zombie_after} s: its process died",
            )
        ],
    ).create()
    return [name]


# What raises an alert: a failed backup, restore drill or WAL archiving, a rollback that failed
# (the release is left as it was: a person must look), and drift. Rejected runs raise none.
ALERTING_EVENTS = {
    "notify-when-backup-fails": (
        {
            "socialnet.backup.failed",
            "socialnet.backup.drill.failed",
            "socialnet.backup.wal_archiving.failed",
        },
        "Backup problem in {{ event.resource['socialnet.environment'] }}",
        "{{ event.event }}: {{ event.payload.get('reason') or event.payload.get('problem', '') }}",
    ),
    "notify-when-rollback-fails": (
        {"socialnet.rollback.failed", "socialnet.release.undo-incomplete"},
        "Rollback problem in {{ event.resource['socialnet.environment'] }}",
        "{{ event.event }}: {{ event.payload.get('reason', '') }}",
    ),
    "notify-when-drift-is-found": (
        {"socialnet.infra.drift"},
        "Drift in {{ event.resource['socialnet.environment'] }}",
        "{{ event.payload.get('summary', '') }}: {{ event.payload.get('addresses', []) | join(', ') }}",
    ),
}


def alert_webhook_url() -> str:
    """An external alert webhook (Slack-compatible JSON, PagerDuty bridge...) or the local inbox."""
    return (
        os.environ.get("SOCIALNET_ALERT_WEBHOOK_URL")
        or f"http://127.0.0.1:{_webhook_port()}/hooks/alerts"
    )


def _register_notifications() -> list[str]:
    """The `socialnet-alerts` notification block and the automations that send through it."""
    from prefect.automations import Automation
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture

    # The local inbox takes the receiver's token, as /hooks/gitlab does; an external webhook
    # never sees it. The block keeps a copy: a rotated webhook token needs `up` again.
    local_inbox = not os.environ.get("SOCIALNET_ALERT_WEBHOOK_URL")
    block = CustomWebhookNotificationBlock(
        name=ALERT_BLOCK,
        url=alert_webhook_url(),
        json_data={"subject": "{{subject}}", "body": "{{body}}", "text": "{{subject}}: {{body}}"},
        headers={"X-Gitlab-Token": "{{webhook_token}}"} if local_inbox else None,
        secrets={
            "webhook_token": read_secret_file(webhook_token_file(), "SOCIALNET_WEBHOOK_TOKEN_FILE")
        }
        if local_inbox
        else {},
    )
    block_id = block.save(ALERT_BLOCK, overwrite=True)
    created = []
    for name, (events, subject, body) in ALERTING_EVENTS.items():
        with contextlib.suppress(ValueError):
            cast(Automation, Automation.read(name=name)).delete()
        Automation(
            name=name,
            description=f"Send {', '.join(sorted(events))} through the {ALERT_BLOCK} block.",
            trigger=EventTrigger(
                expect=events,
                match={"prefect.resource.id": "socialnet.environment.*"},
                posture=Posture.Reactive,
                threshold=1,
            ),
            actions=[SendNotification(block_document_id=block_id, subject=subject, body=body)],
        ).create()
        created.append(name)
    return created


def pool_job_template() -> dict[str, Any]:
    """The process pool's job template: runs start the engine directly in the repository.

    Without a command, Prefect's process worker starts a workspace process that then starts the
    engine: two Python start-ups (seconds each on 2 cores) before a run is Running. The engine
    runs the deployment's pull steps itself.
    """
    from prefect.utilities.processutils import command_to_string
    from prefect.workers.process import ProcessWorker

    # The very command the worker's spare engines stand in for.
    from socialnet_ops.control.worker import engine_command

    template = ProcessWorker.get_default_base_job_template()
    variables = template["variables"]["properties"]
    variables["command"]["default"] = command_to_string(engine_command())
    variables["working_dir"]["default"] = str(repo_root())
    return template


def _ensure_pool_and_limits() -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists

    from flows.common import ensure_release_limits

    template = pool_job_template()
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(
                WorkPoolCreate(name=WORK_POOL, type="process", base_job_template=template)
            )
        except ObjectAlreadyExists:
            client.update_work_pool(WORK_POOL, WorkPoolUpdate(base_job_template=template))
    ensure_release_limits(environment_names())


def up(progress: Any = print) -> dict[str, str]:
    """Start (or keep) the control plane and register everything it serves.

    First PostgreSQL and Redis; then Prefect's schema is brought to this Prefect's version (once,
    before any server runs) and an older SQLite control plane's history is copied in; then the
    API servers, the services, the balancer, the workers and the receiver.
    """
    ports = _stack_ports()
    settings = prefect_settings(ports.balancer)
    prefect = stack()
    prefect.ensure_credentials()
    kept = _keep_credential_in_vault()
    if kept:
        progress(kept)
    prefect.write_environment_files(ports)
    # Runs of this very process (the demo's) find the credential's file as the workers' runs do.
    os.environ.setdefault("SOCIALNET_PREFECT_AUTH_FILE", str(prefect.auth_file))
    config = _write_supervisor_config()
    prefect.write_data_config(ports, progress)
    data = prefect.data_programs(ports)
    servers, clients = prefect.server_programs(ports), _client_programs()
    for priority, (name, (command, user)) in enumerate(data.items(), start=1):
        _write_programs({name: command}, {}, priority, user=user, stopsignal="INT")
    supervisor = _supervisor()
    if supervisor.is_running():
        _remove_stale_programs(set(data) | set(servers) | set(clients) | {REDIS_WATCH})
        supervisor.update()
    else:
        busy = [
            port for port in (ports.balancer, ports.postgres, ports.redis) if not port_is_free(port)
        ]
        if busy:
            raise ControlPlaneError(
                f"port {busy[0]} (control plane) is in use by another program; free it or delete "
                f"{_state_file()} to pick another"
            )
        # Servers start only once their database is ready (below).
        _remove_stale_programs(set(data))
        progress(f"starting supervisord for the control plane ({config})")
        subprocess.run([find_binary("supervisord"), "-c", str(config)], check=True)
    progress("waiting for the control plane's PostgreSQL and Redis")
    prefect.bootstrap_database(ports)
    prefect.wait_for_redis(ports)
    _upgrade_schema(ports, progress)
    migrated = migrate_sqlite_history(
        control_plane_dir() / "prefect" / "prefect.db", prefect.superuser_url(ports)
    )
    if migrated:
        progress(f"history of the SQLite control plane copied to PostgreSQL: {migrated}")
    prefect.write_balancer_config(ports)
    _write_programs(servers, {**_program_settings(), **prefect.server_settings(ports)}, 10)
    _write_programs(clients, _program_settings(), 20)
    _write_redis_watch()
    supervisor.update()
    progress(f"waiting for the Prefect API servers behind {settings['PREFECT_UI_URL']}")
    _wait_for_server(settings["PREFECT_API_URL"])
    with connected(settings):
        _ensure_pool_and_limits()
    progress("registering the deployments of prefect.yaml")
    started = time.monotonic()
    if _register_deployments(settings):
        progress(f"deployments registered in {time.monotonic() - started:.1f} s")
    else:
        progress("deployments unchanged since the last registration")
    with connected(settings):
        automations = (
            _register_automations() + _register_notifications() + _register_zombie_detection()
        )
    progress(f"automations: {', '.join(automations) or 'none'}")
    return settings


# Where the local Vault keeps the API credential: beside, not under, an environment's secrets
# (the flows of `local` read `socialnet/local/*`; they need no control-plane credential).
CREDENTIAL_VAULT_PATH = "control-plane/prefect-auth"


def _keep_credential_in_vault() -> str | None:
    """The API credential in the local environment's Vault (OpenBao), when it runs.

    Vault is the source: a credential written there (rotation) replaces the file at the next
    `up`, which restarts every program that reads it. Without a local Vault the file alone holds
    it. Returns what was done, for the progress lines.
    """
    if WEBHOOK_ENVIRONMENT not in load_catalog():
        return None
    environment = load_environment(WEBHOOK_ENVIRONMENT)
    local = LocalPlatform(environment)
    try:
        address = local.vault_address
        vault.check_health(address)
    except (PlatformError, vault.VaultError):
        return None
    token_file = local.vault_token_file
    session = vault.VaultSession(
        address, vault.TokenLogin(lambda: vault.read_token_file(token_file, "root token"))
    )
    mount = environment.vault.mount
    stored = vault.read_secret(session, mount, CREDENTIAL_VAULT_PATH)
    current = stack().auth_string()
    if stored is None:
        vault.write_secret(session, mount, CREDENTIAL_VAULT_PATH, {"auth-string": current}, cas=0)
        return f"the API credential is kept in the local Vault ({mount}/{CREDENTIAL_VAULT_PATH})"
    if stored.data.get("auth-string") and stored.data["auth-string"] != current:
        write_atomic(stack().auth_file, stored.data["auth-string"] + "\n", mode=0o600)
        return f"the API credential changed in the local Vault ({mount}/{CREDENTIAL_VAULT_PATH})"
    return None


def _upgrade_schema(ports: StackPorts, progress: Any) -> None:
    """`prefect server database upgrade`, once per Prefect version (servers never migrate)."""
    version = importlib.metadata.version("prefect")
    state = _read_state()
    if state.get("schema_for_prefect") == version:
        return
    progress(f"bringing Prefect's database to Prefect {version}")
    prefect = stack()
    command = prefect.with_secrets(
        prefect.server_env, [find_binary("prefect"), "server", "database", "upgrade", "-y"]
    )
    stream(
        command,
        lambda _line: None,
        cwd=repo_root(),
        env={**os.environ, **prefect_settings(ports.balancer), **prefect.server_settings(ports)},
    )
    write_atomic(
        _state_file(), json.dumps({**_read_state(), "schema_for_prefect": version}, indent=2)
    )


def restart(program: str) -> None:
    """Restart one program (e.g. the receiver after its mapping changed)."""
    _supervisor().restart(program)


def down() -> None:
    supervisor = _supervisor()
    if not supervisor.is_running():
        return
    pid_file = control_plane_dir() / "supervisord.pid"
    supervisor.shutdown()
    deadline = time.monotonic() + 30
    while supervisor.is_running() and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)


def control_plane_status() -> dict[str, Any]:
    if not _state_file().exists():
        return {"state": "not started"}
    settings = prefect_settings()
    supervisor = _supervisor()
    if not supervisor.is_running():
        return {"state": "stopped", "ui_url": settings["PREFECT_UI_URL"]}
    try:
        programs = {name: info["statename"] for name, info in supervisor.processes().items()}
    except PlatformError as error:
        return {"state": f"unreachable: {error}"}
    state = "running" if all(value == "RUNNING" for value in programs.values()) else "degraded"

    return {
        "state": state,
        "ui_url": settings["PREFECT_UI_URL"],
        "webhook_url": f"http://127.0.0.1:{_webhook_port()}/hooks/gitlab",
        "programs": programs,
        "recent_alerts": read_alerts(alerts_file()),
    }
