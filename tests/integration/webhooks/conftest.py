"""Fixtures of the webhook suite: a fake GitLab, the receiver in-process, throwaway deployments.

The deployments carry the names of the gitflow mapping on the session's real Prefect server but
have no work pool: a created run stays Scheduled, which is all these tests look at.
"""

from __future__ import annotations

import logging
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import pytest_asyncio
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun
from starlette.applications import Starlette

from socialnet_ops.core.gitflow import gitflow_file
from tests.integration.webhooks.fake_gitlab import TOKEN, FakeGitLab, running_fake_gitlab
from webhooks.app import ReceiverSettings, create_app
from webhooks.launcher import Launcher

WEBHOOK_TOKEN = "wh-" + secrets.token_hex(16)
MAX_BODY = 64 * 1024

# (flow, deployment, accepts a `gitlab` parameter): provision has none, so its runs carry the
# GitLab context in tags only, as a flow the lead has not extended yet would.
DEPLOYMENTS = [
    ("release", "release-staging", True),
    ("canary", "canary-production", True),
    ("provision", "provision-staging", False),
    ("provision", "provision-production", False),
    ("provision", "provision-technical", False),
    ("mr-apply", "mr-apply-staging", False),
    ("mr-apply", "mr-apply-production", False),
    ("mr-apply", "mr-apply-technical", False),
]


def _schema(accepts_gitlab: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "env": {"type": "string"},
        "version": {"type": "string"},
        "ref": {"type": "string"},
        "apply_changes": {"type": "boolean"},
        "take_backup": {"type": "boolean"},
        "merge_request": {"type": "integer"},
        "project_id": {"type": "integer"},
    }
    if accepts_gitlab:
        properties["gitlab"] = {"type": "object"}
    return {"title": "Parameters", "type": "object", "properties": properties, "required": ["env"]}


def _secret_file(folder: Path, name: str, value: str) -> Path:
    path = folder / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def fake_gitlab() -> Iterator[FakeGitLab]:
    with running_fake_gitlab() as fake:
        yield fake


@pytest.fixture(scope="session")
def gitlab_env(fake_gitlab: FakeGitLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The receiver's and the hooks' settings, as the control plane gives them."""
    folder = tmp_path_factory.mktemp("webhook-secrets")
    values = {
        "SOCIALNET_WEBHOOK_TOKEN_FILE": str(_secret_file(folder, "webhook-token", WEBHOOK_TOKEN)),
        "SOCIALNET_GITLAB_URL": fake_gitlab.url,
        "SOCIALNET_GITLAB_TOKEN_FILE": str(_secret_file(folder, "gitlab-token", TOKEN)),
        "SOCIALNET_WEBHOOK_NOTICES_FILE": str(folder / "webhook-notices.jsonl"),
    }
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    yield
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def webhook_deployments(prefect_server: None) -> dict[str, UUID]:
    with get_client(sync_client=True) as client:
        ids = {}
        for flow_name, name, accepts_gitlab in DEPLOYMENTS:
            flow_id = client.create_flow_from_name(flow_name)
            ids[f"{flow_name}/{name}"] = client.create_deployment(
                flow_id=flow_id,
                name=name,
                parameter_openapi_schema=_schema(accepts_gitlab),
                enforce_parameter_schema=True,
            )
    return ids


@dataclass
class Receiver:
    http: httpx.AsyncClient
    launcher: Launcher
    app: Starlette

    async def deliver(
        self,
        kind: str,
        body: Any,
        uuid: str | None = None,
        token: str | None = WEBHOOK_TOKEN,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        from tests.integration.webhooks.payloads import EVENT_HEADER

        sent = {"X-Gitlab-Event": EVENT_HEADER.get(kind, kind)}
        if token is not None:
            sent["X-Gitlab-Token"] = token
        if uuid is not None:
            sent["X-Gitlab-Event-UUID"] = uuid
        sent.update(headers or {})
        if isinstance(body, bytes):
            return await self.http.post("/hooks/gitlab", content=body, headers=sent)
        return await self.http.post("/hooks/gitlab", json=body, headers=sent)

    async def runs(self, event_id: str) -> list[FlowRun]:
        """Flow runs started for a delivery (after the background work is done)."""
        await self.launcher.drain()
        async with get_client() as client:
            return await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=[f"gitlab.event_id:{event_id}"])
                )
            )


@pytest_asyncio.fixture
async def receiver(
    gitlab_env: None, webhook_deployments: dict[str, UUID], fake_gitlab: FakeGitLab
) -> AsyncIterator[Receiver]:
    fake_gitlab.reset()
    app = create_app(
        ReceiverSettings(gitflow_file=gitflow_file(), max_body_bytes=MAX_BODY, workers=4)
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as http:
            yield Receiver(http, app.state.launcher, app)


def delivery() -> str:
    """A fresh X-Gitlab-Event-UUID."""
    return str(uuid.uuid4())


@pytest.fixture
def receiver_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The receiver's log lines (its logger does not propagate: it writes plain lines itself)."""
    log = logging.getLogger("socialnet.webhooks")
    log.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        log.removeHandler(caplog.handler)
