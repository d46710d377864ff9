"""`make demo`: the lifecycle on the `local` environment, with a summary and one JSON line last."""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from socialnet_ops.builds import source_identity

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
    return f"{ui_url}/runs/flow-run/{run_id}" if run_id else ""


def _use_the_app(edge_url: str) -> dict[str, Any]:
    """A user's round trip through the edge: sign up, post, read the timeline."""
    username = f"demo{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(12)
    with httpx.Client(base_url=edge_url, timeout=10) as client:
        client.post(
            "/api/users", json={"username": username, "password": password}
        ).raise_for_status()
        token = client.post("/api/auth/token", json={"username": username, "password": password})
        token.raise_for_status()
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        client.post(
            "/api/posts", json={"text": "hello from make demo"}, headers=headers
        ).raise_for_status()
        timeline = client.get("/api/timeline", headers=headers)
        timeline.raise_for_status()
        if not any(item["text"] == "hello from make demo" for item in timeline.json()["items"]):
            raise DemoFailure("the post is missing from the author's timeline")
        served = client.get("/version").json()["version"]
    return {"user": username, "served_by": served}


def _expect_version(edge_url: str, version: str) -> dict[str, Any]:
    served = httpx.get(f"{edge_url}/version", timeout=5).json()["version"]
    if served != version:
        raise DemoFailure(f"the edge serves {served}, expected {version}")
    return {"serving": served}


def demo_versions(*names: str) -> list[str]:
    _, git_sha = source_identity(None)
    return [f"{name}-{git_sha.removeprefix('worktree-')[:7]}" for name in names]


def run_demo(console: Console) -> int:
    from flows.deploy import deploy
    from flows.rollback import rollback
    from socialnet_ops import control_plane
    from socialnet_ops.environments import load_environment
    from socialnet_ops.platforms import platform_for

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
        current.run_url = _run_url(context.get("ui_url", ""), outcome)
        current.outcome = outcome if isinstance(outcome, dict) else {}
        return outcome

    def start_everything() -> dict[str, Any]:
        # The platform first: it bootstraps Vault, which holds the webhook receiver's token.
        endpoints = platform_for(load_environment(DEMO_ENV)).start(progress=say)
        settings = control_plane.up(progress=say)
        context["ui_url"] = settings["PREFECT_UI_URL"]
        context["edge_url"] = endpoints.edge_url
        context["prometheus_url"] = endpoints.prometheus_url
        return {"ui": settings["PREFECT_UI_URL"], "app": endpoints.edge_url}

    failed = False
    try:
        stage("start control plane + local platform", start_everything)
        connection.enter_context(control_plane.connected())
        # Versions carry the source's identity: a rerun on the same code reuses its builds.
        v1, v2 = demo_versions("v1", "v2")
        stage(f"deploy {v1}", lambda: deploy(env=DEMO_ENV, version=v1))
        stage("use the social network", lambda: _use_the_app(context["edge_url"]))
        stage(f"deploy {v2}", lambda: deploy(env=DEMO_ENV, version=v2))
        stage(f"verify {v2} serves", lambda: _expect_version(context["edge_url"], v2))
        stage("roll back", lambda: rollback(env=DEMO_ENV, reason="demo"))
        stage(f"verify {v1} serves again", lambda: _expect_version(context["edge_url"], v1))
    except Exception:
        failed = True
    finally:
        connection.close()

    table = Table("stage", "result", "time (s)", "run in the Prefect UI / detail")
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
    summary = {
        "demo": "failed" if failed else "ok",
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
