"""`make demo`: the lifecycle on the `local` environment, with a summary and one JSON line last."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from flows.backup import backup_marker, base_backup
from flows.canary import CanaryAbortedError, canary
from flows.configure import configure_launcher_nodes
from flows.deploy import deploy
from flows.provision import provision
from flows.restore import pitr_drill, restore_drill
from flows.rollback import rollback
from flows.secrets import secrets as secrets_flow
from socialnet_ops.control import control_plane
from socialnet_ops.control.demo_project import (
    NAME,
    DemoProject,
    deliver_push,
    delivered_run_result,
    demo_gitflow,
)
from socialnet_ops.control.load import SteadyLoad
from socialnet_ops.core.environments import load_environment
from socialnet_ops.core.results import CanaryResult, ConfigureResult, FlowResult, ReleaseResult
from socialnet_ops.platforms import platform_for

DEMO_ENV = "local"


@dataclass
class Stage:
    name: str
    result: str = "not run"
    seconds: float = 0.0
    detail: str = ""
    run_url: str = ""
    outcome: dict[str, Any] = field(default_factory=dict)


class DemoFailure(Exception):
    pass


def _run_url(ui_url: str, outcome: Any) -> str:
    run_id = outcome.get("flow_run_id") if isinstance(outcome, dict) else None
    if isinstance(outcome, FlowResult):
        run_id = outcome.flow_run_id
    return f"{ui_url}/runs/flow-run/{run_id}" if run_id else ""


def _synthetic_users(edge_url: str, count: int = 6) -> dict[str, Any]:
    """Users who sign up, follow each other, post and read their timelines, through the edge."""
    users = []
    with httpx.Client(base_url=edge_url, timeout=10) as client:
        for number in range(count):
            username = f"demo{number}{secrets.token_hex(2)}"
            password = secrets.token_urlsafe(12)
            client.post(
                "/api/users", json={"username": username, "password": password}
            ).raise_for_status()
            token = client.post(
                "/api/auth/token", json={"username": username, "password": password}
            )
            token.raise_for_status()
            users.append((username, {"Authorization": f"Bearer {token.json()['access_token']}"}))
        for index, (username, headers) in enumerate(users):
            followed = users[(index + 1) % count][0]
            client.post(f"/api/users/{followed}/follow", headers=headers).raise_for_status()
            client.post(
                "/api/posts", json={"text": f"hello from {username}"}, headers=headers
            ).raise_for_status()
        for index, (_, headers) in enumerate(users):
            timeline = client.get("/api/timeline", headers=headers)
            timeline.raise_for_status()
            followed = users[(index + 1) % count][0]
            if not any(item["author"]["username"] == followed for item in timeline.json()["items"]):
                raise DemoFailure(f"{followed}'s post is missing from a follower's timeline")
    return {"users": [name for name, _ in users]}


def _browsing_paths(users: list[str]) -> list[str]:
    """What the synthetic users keep reading while releases happen (user routes: the canary's sample)."""
    return [path for user in users for path in (f"/api/users/{user}", f"/api/users/{user}/posts")]


def _expect_version(edge_url: str, version: str) -> dict[str, Any]:
    served = httpx.get(f"{edge_url}/version", timeout=5).json()["version"]
    if served != version:
        raise DemoFailure(f"the edge serves {served}, expected {version}")
    return {"serving": served}


def expect_released(result: ReleaseResult) -> ReleaseResult:
    """Every stage of the release ran (configure may be skipped, said why) or was already done."""
    bad = {stage: outcome for stage, outcome in result.stages.items() if outcome == "failed"}
    canary = [row for row in result.rows if row["stage"].startswith("canary")]
    if bad or not canary or not canary[0]["detail"].startswith("promoted"):
        raise DemoFailure(f"the release did not promote the healthy version: {result.rows}")
    return result


def expect_aborted(canary: Callable[..., CanaryResult], version: str, ref: str) -> CanaryResult:
    """A build failing 30% of requests must be stopped by the analysis, not by a person."""

    try:
        result = canary(
            env=DEMO_ENV,
            version=version,
            ref=ref,
            settings={"SOCIALNET_FAULT_ERROR_RATE": "0.3"},
        )
    except CanaryAbortedError as aborted:
        return aborted.details
    raise DemoFailure(f"the bad canary was not aborted: {result.summary()}")


def configure_local_nodes(say: Callable[[str], None], ref: str) -> ConfigureResult | dict[str, Any]:
    """Ansible on real local nodes where the machine allows it (root, systemd-nspawn), said otherwise.

    The receiver then releases pushes with or without the configure stage accordingly."""

    result = configure_launcher_nodes(DEMO_ENV, ref=ref)
    if isinstance(result, dict):
        say(f"configure: skipped, {result.get('reason')}")
    demo_gitflow(configure_nodes=isinstance(result, ConfigureResult))
    control_plane.restart("webhook-receiver")
    return result


def release_pushed_change(project: DemoProject, say: Callable[[str], None]) -> ReleaseResult:
    """A developer's change pushed to develop, announced by GitLab's webhook: the receiver
    starts the release of that exact commit, which the worker runs."""
    before = project.head()
    sha = project.push_change(
        "app/front/demo-change.txt", f"pushed at {time.time():.0f}\n", "front: a demo change"
    )
    say(f"pushed {sha[:12]} to develop on {project.url}; delivering the Push Hook")
    event_id = deliver_push(before, sha)
    return expect_released(delivered_run_result(event_id))


def _serving_status() -> dict[str, Any]:
    """How the demo's app runs at the end: containers of which images, or processes and why."""
    try:
        status = platform_for(load_environment(DEMO_ENV)).status()
    except Exception as error:  # the summary still prints when the platform cannot answer
        return {"runtime": f"unknown ({error})"}
    return {"runtime": status.runtime, "images": status.images}


def run_demo(console: Console) -> int:

    say: Callable[[str], None] = lambda line: console.print(f"[dim]{line}[/dim]")  # noqa: E731
    stages: list[Stage] = []
    context: dict[str, Any] = {}
    connection = contextlib.ExitStack()

    def stage(name: str, action: Callable[[], Any]) -> Any:
        current = Stage(name)
        stages.append(current)
        console.rule(f"[bold]{name}")
        started = time.monotonic()
        try:
            outcome = action()
        except Exception as error:
            current.result, current.detail = "failed", str(error).splitlines()[0][:200]
            raise
        finally:
            current.seconds = round(time.monotonic() - started, 1)
        current.result = "ok"
        if isinstance(outcome, dict) and outcome.get("configured") is False:
            current.result, current.detail = "skipped", str(outcome.get("reason"))[:200]
        current.run_url = _run_url(context.get("ui_url", ""), outcome)
        current.outcome = outcome if isinstance(outcome, dict) else {}
        return outcome

    def start_everything() -> dict[str, Any]:
        # The platform first: it bootstraps Vault, which holds the webhook receiver's token.
        endpoints = platform_for(load_environment(DEMO_ENV)).start(progress=say)
        # Runs read the project from the local git remote; the receiver maps pushes to `local`.
        os.environ["SOCIALNET_SOURCE_URL"] = control_plane.git_remote_url(NAME)
        os.environ["SOCIALNET_GITFLOW_FILE"] = str(demo_gitflow(configure_nodes=True))
        settings = control_plane.up(progress=say)
        context["ui_url"] = settings["PREFECT_UI_URL"]
        context["edge_url"] = endpoints.edge_url
        context["prometheus_url"] = endpoints.prometheus_url
        return {"ui": settings["PREFECT_UI_URL"], "app": endpoints.edge_url}

    failed = False
    load: SteadyLoad | None = None
    try:
        stage("start the local platform + control plane", start_everything)
        connection.enter_context(control_plane.connected())
        project = stage("push the project to its git remote", DemoProject.seeded)
        first = project.head()
        v1, v3 = f"v1-{first[:7]}", f"v3-{first[:7]}"
        stage("provision (Terraform → AWS emulator)", lambda: provision(env=DEMO_ENV, ref=first))
        stage("configure nodes (Ansible)", lambda: configure_local_nodes(say, first))
        stage("secrets (Vault bootstrap)", lambda: secrets_flow(env=DEMO_ENV))
        stage(f"deploy {v1}", lambda: deploy(env=DEMO_ENV, version=v1, ref=first))
        people = stage("synthetic users", lambda: _synthetic_users(context["edge_url"]))
        # Point-in-time recovery works from a base backup on: take one, not wait for the night.
        stage(
            "base backup (pgBackRest: full, encrypted, verified, copied to a second bucket)",
            lambda: base_backup(env=DEMO_ENV),
        )
        load = SteadyLoad(
            context["edge_url"], _browsing_paths(people["users"]), rate=30, max_seconds=900
        ).start()
        released = stage(
            "push to develop → GitLab webhook → release: provision → configure → secrets → "
            "canary (healthy: promoted) → backup",
            lambda: release_pushed_change(project, say),
        )
        v2 = released.version
        stage(f"canary {v3} (30% errors: aborted)", lambda: expect_aborted(canary, v3, first))
        stage(f"verify {v2} still serves", lambda: _expect_version(context["edge_url"], v2))
        stage("recovery marker (what the database holds now)", lambda: backup_marker(env=DEMO_ENV))
        stage("restore drill of the dump (verified)", lambda: restore_drill(env=DEMO_ENV))
        stage("roll back", lambda: rollback(env=DEMO_ENV, reason="demo"))
        stage(f"verify {v1} serves again", lambda: _expect_version(context["edge_url"], v1))
        stage(
            "point-in-time drill: the marker's moment recovered and verified (RTO, RPO)",
            lambda: pitr_drill(env=DEMO_ENV),
        )
    except Exception:
        failed = True
    finally:
        if load is not None:
            samples = load.stop()
            context["synthetic_requests"] = len(samples)
            context["synthetic_failures"] = sum(1 for sample in samples if not sample.ok)
        connection.close()

    table = Table("stage", "result", "time (s)")
    # Links stay whole (folded, never cut with an ellipsis) so they can be opened.
    table.add_column("run in the Prefect UI / detail", overflow="fold")
    for item in stages:
        colour = "green" if item.result == "ok" else "red"
        table.add_row(
            item.name,
            f"[{colour}]{item.result}[/{colour}]",
            f"{item.seconds}",
            item.run_url or item.detail,
        )
    console.print(table)
    if not failed:
        console.print(
            f"The social network: {context['edge_url']}   Prefect UI: {context['ui_url']}   "
            "(`make down` stops everything)"
        )
    serving = _serving_status()
    summary = {
        "demo": "failed" if failed else "ok",
        "runtime": serving.get("runtime"),
        "images": serving.get("images"),
        "synthetic_requests": context.get("synthetic_requests"),
        "synthetic_failures": context.get("synthetic_failures"),
        "stages": {item.name: item.result for item in stages},
        "seconds": round(sum(item.seconds for item in stages), 1),
        "urls": {
            "app": context.get("edge_url"),
            "prefect_ui": context.get("ui_url"),
            "prometheus": context.get("prometheus_url"),
        },
    }
    print(json.dumps(summary))
    return 1 if failed else 0
