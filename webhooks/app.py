"""The GitLab webhook receiver (ASGI): `POST /hooks/gitlab`, `GET /healthz` (and the local alert
inbox `POST /hooks/alerts`, webhooks/alerts.py).

Run it as the control plane does (socialnet_ops/control/control_plane.py `_programs`):
`uvicorn webhooks.app:create_app --factory --host 127.0.0.1 --port 8088
--http webhooks.server:ReceiverProtocol --timeout-keep-alive 5` (webhooks/server.py bounds the wait
for a request's headers).

A delivery is checked in this order, each answered at once with one line naming the problem:
token (401), size (413, from Content-Length before reading, else while reading), time to send the
body (408), JSON (400, also when nested too deeply to parse), event and payload (400 naming the
field, e.g. a sha that is not a 40-hex commit id), mapping (202 "ignored" with the reason), what the
receiver can honour (202 "ignored" when a merge request's changed files cannot be read from the
GitLab API; 200 "refused" when the promotion gate refuses the commit), queue (503 when full).
Accepted deliveries are answered 202 with the planned deployments; the runs start in the
background (webhooks/launcher.py). A merge request's `merge` or `close` (or the note command
`socialnet-ops unlock`) first releases the stack locks it holds (webhooks/locks.py; the reply's
`released_locks`, 503 when Prefect cannot be reached). Authenticated deliveries that start nothing for a reason a
person should see are kept for `socialnet-ops status` (webhooks/records.py).

Settings (environment):
  SOCIALNET_WEBHOOK_TOKEN_FILE    0600 file with the webhook's secret token (required)
  SOCIALNET_GITFLOW_FILE          the mapping (default deployments/gitflow.yaml)
  SOCIALNET_WEBHOOK_MAX_BODY      largest accepted body in bytes (default 2 MiB)
  SOCIALNET_WEBHOOK_WORKERS       background workers starting runs (default 8)
  SOCIALNET_WEBHOOK_QUEUE         deliveries waiting for a worker before 503 (default 1000)
  SOCIALNET_GITLAB_URL, SOCIALNET_GITLAB_TOKEN_FILE   feedback to GitLab (socialnet_ops/adapters/gitlab.py)
  SOCIALNET_ALERTS_FILE           where the alert inbox keeps alerts (unset: no inbox)
  SOCIALNET_WEBHOOK_NOTICES_FILE  deliveries not honoured (default in the control plane's folder)
  SOCIALNET_WEBHOOK_HEADER_TIMEOUT  seconds a request's headers may take (default 10, server.py)
  PREFECT_API_URL, PREFECT_UI_URL the Prefect server, and the links put in commit statuses
"""

from __future__ import annotations

import asyncio
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

from socialnet_ops.adapters.gitlab import GitLabConfigError, gitlab_settings
from socialnet_ops.core.environments import load_catalog
from socialnet_ops.core.gitflow import (
    GitEvent,
    GitflowMapping,
    Rule,
    check_against_catalog,
    delivery_key,
    gitflow_file,
    load_mapping,
    matching_rules,
    releases_stack_locks,
)
from webhooks.alerts import alert_inbox
from webhooks.body import BODY_SECONDS, BodyRefused, check_token, json_object, read_body
from webhooks.gitlab import EVENT_HEADERS, PayloadError, parse_event
from webhooks.launcher import Job, Launcher
from webhooks.records import record_notice
from webhooks.token import TokenSource, webhook_token_source

logger = logging.getLogger("socialnet.webhooks")

DEFAULT_MAX_BODY = 2 * 1024 * 1024
# The promotion gate reads the source's ledger from Prefect before answering; GitLab waits 10 s
# for a reply by default, so a slow Prefect is answered 503 well before that.
GATE_SECONDS = 5.0


@dataclass(frozen=True)
class ReceiverSettings:
    gitflow_file: Path
    max_body_bytes: int = DEFAULT_MAX_BODY
    workers: int = 8
    queue_size: int = 1000
    body_seconds: float = BODY_SECONDS

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


def _noted(header: str, delivery: str | None, response: JSONResponse) -> JSONResponse:
    """`response`, kept for `socialnet-ops status` too: GitLab's hook log is not where people look."""
    record_notice(header, delivery, response.status_code, json.loads(bytes(response.body)))
    return response


def _unreadable_changes() -> str | None:
    """Why the changed files of a merge request cannot be read now, or None."""
    try:
        if gitlab_settings() is not None:
            return None
        problem = "set SOCIALNET_GITLAB_URL and SOCIALNET_GITLAB_TOKEN_FILE"
    except GitLabConfigError as error:
        problem = str(error)
    return f"the changed files of a merge request come from the GitLab API: {problem}"


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
        refused = check_token(self.token, request)
        if refused is not None:
            return refused
        header = request.headers.get("x-gitlab-event", "")
        try:
            body = await read_body(
                request, self.settings.max_body_bytes, self.settings.body_seconds
            )
            document = json_object(body)
        except BodyRefused as refusal:
            return _noted(header, None, refusal.reply)
        delivery = delivery_key(
            request.headers.get("idempotency-key"),
            request.headers.get("x-gitlab-event-uuid"),
            body,
        )
        kind = EVENT_HEADERS.get(header)
        if kind is None:
            return _reply(
                202, status="ignored", delivery=delivery, reason=f"event {header!r} is not handled"
            )
        try:
            event = parse_event(kind, document, delivery)
        except PayloadError as error:
            return _noted(header, delivery, _reply(400, error=f"invalid {header} payload: {error}"))
        released: dict[str, list[str]] = {}
        if releases_stack_locks(event) and (
            not self.mapping.projects or event.project_path in self.mapping.projects
        ):
            try:
                async with asyncio.timeout(GATE_SECONDS):
                    if locks := await self.launcher.release_locks(event):
                        released["released_locks"] = locks
            except Exception as error:
                logger.warning("delivery %s: the stack locks stay held: %r", delivery, error)
                return _noted(
                    header,
                    delivery,
                    JSONResponse(
                        {
                            "error": f"cannot release the stack locks of !{event.merge_request_iid}"
                            " in Prefect; redeliver later"
                        },
                        status_code=503,
                        headers={"Retry-After": "30"},
                    ),
                )
        rules, reason = matching_rules(self.mapping, event)
        if not rules:
            return _reply(202, status="ignored", delivery=delivery, reason=reason, **released)
        try:
            async with asyncio.timeout(GATE_SECONDS):
                not_started, refused_rules = await self._what_cannot_start(event, rules)
        except Exception as error:
            logger.warning("delivery %s: the promotion gate cannot decide: %r", delivery, error)
            return JSONResponse(
                {"error": "the promotion gate cannot read the ledger from Prefect; retry later"},
                status_code=503,
                headers={"Retry-After": "30"},
            )
        runnable = [rule for rule in rules if rule.name not in not_started]
        queued = (runnable or refused_rules) and self.launcher.submit(
            Job(event, runnable, refused_rules)
        )
        if runnable and not queued:
            return JSONResponse(
                {"error": "too many deliveries waiting; retry later"},
                status_code=503,
                headers={"Retry-After": "30"},
            )
        # (A refusal that did not fit the queue only loses its failed commit status.)
        if not runnable:
            # A refusal is a decision, not a failed delivery: 200, since GitLab counts 4xx and 5xx
            # replies as failures and disables a hook after four in a row; retrying cannot help.
            code, status = (200, "refused") if refused_rules else (202, "ignored")
            return _noted(
                header,
                delivery,
                _reply(
                    code,
                    status=status,
                    delivery=delivery,
                    rules=list(not_started),
                    reason="; ".join(dict.fromkeys(not_started.values())),
                    sha=event.sha,
                    ref=event.ref,
                ),
            )
        planned = [
            rule.deployment.replace("{environment}", f"<{'|'.join(rule.environments)} touched>")
            for rule in runnable
        ]
        reply = _reply(
            202,
            status="accepted",
            delivery=delivery,
            rules=[rule.name for rule in runnable],
            planned=planned,
            sha=event.sha,
            ref=event.ref,
            **({"not_started": not_started} if not_started else {}),
        )
        return _noted(header, delivery, reply) if not_started else reply

    async def _what_cannot_start(
        self, event: GitEvent, rules: list[Rule]
    ) -> tuple[dict[str, str], list[tuple[Rule, str]]]:
        """Rules that will start nothing, with why ({rule name: reason}), and among them those the
        promotion gate refused: known before answering, so the reply says what will happen."""
        not_started: dict[str, str] = {}
        refused: list[tuple[Rule, str]] = []
        for rule in rules:
            if rule.needs_changed_paths:
                unreadable = _unreadable_changes()
                if unreadable:
                    not_started[rule.name] = unreadable
                    continue
            refusal = await self.launcher.promotion_refusal(event, rule)
            if refusal:
                not_started[rule.name] = refusal
                refused.append((rule, refusal))
        return not_started, refused

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
    token = webhook_token_source()
    receiver = Receiver(settings, token, mapping, launcher)

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
            Route("/hooks/alerts", alert_inbox(token), methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.receiver = receiver
    app.state.launcher = launcher
    return app
