"""The GitLab webhook receiver (ASGI): `POST /hooks/gitlab`, `GET /healthz` (and the local alert
inbox `POST /hooks/alerts`, webhooks/alerts.py).

Run it with `uvicorn webhooks.app:create_app --factory --host 127.0.0.1 --port 8088`.

A delivery is checked in this order, each answered at once: token (401), size (413), JSON (400),
event and payload (400 naming the field), mapping (202 "ignored" with the reason), queue (503 when
full, so GitLab retries). Mapped deliveries are answered 202 with the planned deployments; the runs
start in the background (webhooks/launcher.py).

Settings (environment):
  SOCIALNET_WEBHOOK_TOKEN_FILE    0600 file with the webhook's secret token (required)
  SOCIALNET_GITFLOW_FILE          the mapping (default deployments/gitflow.yaml)
  SOCIALNET_WEBHOOK_MAX_BODY      largest accepted body in bytes (default 2 MiB)
  SOCIALNET_WEBHOOK_WORKERS       background workers starting runs (default 8)
  SOCIALNET_WEBHOOK_QUEUE         deliveries waiting for a worker before 503 (default 1000)
  SOCIALNET_GITLAB_URL, SOCIALNET_GITLAB_TOKEN_FILE   feedback to GitLab (tasks/gitlab.py)
  SOCIALNET_ALERTS_FILE           where the alert inbox keeps alerts (unset: no inbox)
  PREFECT_API_URL, PREFECT_UI_URL the Prefect server, and the links put in commit statuses
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from socialnet_ops.environments import load_catalog
from socialnet_ops.gitflow import (
    GitflowMapping,
    check_against_catalog,
    delivery_key,
    gitflow_file,
    load_mapping,
    matching_rules,
)
from webhooks.alerts import receive_alert
from webhooks.gitlab import EVENT_HEADERS, PayloadError, parse_event
from webhooks.launcher import Job, Launcher
from webhooks.token import TokenSource, webhook_token_source

logger = logging.getLogger("socialnet.webhooks")

DEFAULT_MAX_BODY = 2 * 1024 * 1024


class BodyTooLarge(Exception):
    pass


@dataclass(frozen=True)
class ReceiverSettings:
    gitflow_file: Path
    max_body_bytes: int = DEFAULT_MAX_BODY
    workers: int = 8
    queue_size: int = 1000

    @classmethod
    def from_env(cls) -> ReceiverSettings:
        return cls(
            gitflow_file=Path(os.environ.get("SOCIALNET_GITFLOW_FILE") or gitflow_file()),
            max_body_bytes=int(os.environ.get("SOCIALNET_WEBHOOK_MAX_BODY", DEFAULT_MAX_BODY)),
            workers=int(os.environ.get("SOCIALNET_WEBHOOK_WORKERS", 8)),
            queue_size=int(os.environ.get("SOCIALNET_WEBHOOK_QUEUE", 1000)),
        )


def _reply(code: int, **content: Any) -> JSONResponse:
    return JSONResponse(content, status_code=code)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing more than `limit` bytes while reading (Content-Length may lie)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


class Receiver:
    def __init__(
        self,
        settings: ReceiverSettings,
        token: TokenSource,
        mapping: GitflowMapping,
        launcher: Launcher,
    ) -> None:
        self.settings = settings
        self.token = token
        self.mapping = mapping
        self.launcher = launcher

    async def hook(self, request: Request) -> JSONResponse:
        started = time.perf_counter()
        self.launcher.last_delivery = time.monotonic()
        response = await self._hook(request)
        self.launcher.last_delivery = time.monotonic()
        logger.info(
            "POST /hooks/gitlab %s %s %.1f ms %s",
            request.headers.get("x-gitlab-event", "-"),
            response.status_code,
            (time.perf_counter() - started) * 1000,
            bytes(response.body)[:200].decode(errors="replace"),
        )
        return response

    async def _hook(self, request: Request) -> JSONResponse:
        try:
            authorized = self.token.matches(request.headers.get("x-gitlab-token"))
        except (OSError, RuntimeError) as error:
            logger.error("the webhook token cannot be read: %s", error)
            return _reply(503, error="the receiver cannot read its token")
        if not authorized:
            return _reply(401, error="missing or wrong X-Gitlab-Token")
        try:
            body = await _read_body(request, self.settings.max_body_bytes)
        except BodyTooLarge:
            return _reply(413, error=f"body larger than {self.settings.max_body_bytes} bytes")
        try:
            document = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return _reply(400, error=f"body is not valid JSON: {error}")
        if not isinstance(document, dict):
            return _reply(400, error="body must be a JSON object")
        delivery = delivery_key(
            request.headers.get("idempotency-key"),
            request.headers.get("x-gitlab-event-uuid"),
            body,
        )
        header = request.headers.get("x-gitlab-event", "")
        kind = EVENT_HEADERS.get(header)
        if kind is None:
            return _reply(
                202, status="ignored", delivery=delivery, reason=f"event {header!r} is not handled"
            )
        try:
            event = parse_event(kind, document, delivery)
        except PayloadError as error:
            return _reply(400, error=f"invalid {header} payload: {error}")
        rules, reason = matching_rules(self.mapping, event)
        if not rules:
            return _reply(202, status="ignored", delivery=delivery, reason=reason)
        if not self.launcher.submit(Job(event, rules)):
            return JSONResponse(
                {"error": "too many deliveries waiting; retry later"},
                status_code=503,
                headers={"Retry-After": "30"},
            )
        planned = [
            rule.deployment.replace("{environment}", f"<{'|'.join(rule.environments)} touched>")
            for rule in rules
        ]
        return _reply(
            202,
            status="accepted",
            delivery=delivery,
            rules=[rule.name for rule in rules],
            planned=planned,
            sha=event.sha,
            ref=event.ref,
        )

    async def healthz(self, _: Request) -> JSONResponse:
        return _reply(
            200,
            status="ok",
            queued=self.launcher.queue.qsize(),
            counts=self.launcher.counts,
            rules=[rule.name for rule in self.mapping.rules],
        )


def _plain_log_lines() -> None:
    """One plain line per delivery on stderr: a rich console handler (Prefect installs one) costs
    milliseconds per record, on the request path."""
    for name in ("socialnet.webhooks",):
        log = logging.getLogger(name)
        log.setLevel(logging.INFO)
        if not log.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
            )
            log.addHandler(handler)
            log.propagate = False


def create_app(settings: ReceiverSettings | None = None) -> Starlette:
    """The receiver; mapping, catalog and token are checked here, so a bad setup fails at start."""
    settings = settings or ReceiverSettings.from_env()
    _plain_log_lines()
    mapping = load_mapping(settings.gitflow_file)
    catalog = load_catalog()
    promotion_sources = {
        name: environment.promotion.source
        for name, environment in catalog.items()
        if environment.promotion
    }
    check_against_catalog(mapping, catalog, promotion_sources)
    launcher = Launcher(
        mapping,
        stacks={name: environment.terraform.stack for name, environment in catalog.items()},
        promotion_sources=promotion_sources,
        workers=settings.workers,
        queue_size=settings.queue_size,
    )
    receiver = Receiver(settings, webhook_token_source(), mapping, launcher)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await launcher.start()
        logger.info(
            "receiving GitLab webhooks; rules: %s", ", ".join(rule.name for rule in mapping.rules)
        )
        try:
            yield
        finally:
            await launcher.stop()

    app = Starlette(
        routes=[
            Route("/hooks/gitlab", receiver.hook, methods=["POST"]),
            Route("/healthz", receiver.healthz, methods=["GET"]),
            Route("/hooks/alerts", receive_alert, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.receiver = receiver
    app.state.launcher = launcher
    return app
