"""Starting runs off the request path: a bounded queue drained by a few workers.

The receiver answers GitLab as soon as a delivery is validated, mapped and past the promotion gate
(the promotion source's ledger is read before answering, so a refusal is said in the reply); a
worker then reads a merge request's changed files, creates the flow runs with the async Prefect
client and reports a commit status, also for what was refused. Duplicates are Prefect's to
drop: every run is created with an idempotency key derived from the delivery, so a retried or
replayed delivery returns the run that already exists, whichever worker or replica sends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import PREFECT_UI_URL
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from socialnet_ops.adapters.gitlab import (
    flow_run_url,
    gitlab_settings,
    post_merge_request_note,
    report_commit_status,
    shared_gitlab_api,
)
from socialnet_ops.core.gitflow import (
    GitEvent,
    GitflowMapping,
    Launch,
    Rule,
    command_starts_nothing,
    launches,
    promotion_refusal,
)
from socialnet_ops.core.ledger import Ledger
from webhooks.locks import release_locks

logger = logging.getLogger("socialnet.webhooks")
T = TypeVar("T")

DEPLOYMENT_CACHE_SECONDS = 30.0
PREFECT_ATTEMPTS = 3
# Replies first: background work waits until deliveries pause this long (CPU is shared with the
# request path), but never more than MAX_DEFER_SECONDS, so a steady stream cannot starve it.
QUIET_SECONDS = 0.02
MAX_DEFER_SECONDS = 2.0


@dataclass
class Job:
    event: GitEvent
    rules: list[Rule]  # to start
    # Rules the receiver refused (rule, reason): only their failed commit status is left to send.
    refused: list[tuple[Rule, str]] = field(default_factory=list)
    # Notes to post on the event's merge request (e.g. its stack locks were released).
    notes: list[str] = field(default_factory=list)
    received_at: float = field(default_factory=time.time)


@dataclass
class Outcome:
    """What became of one planned run (kept briefly for /healthz and tests)."""

    delivery_id: str
    deployment: str
    flow_run_id: str | None = None
    refused: str | None = None
    error: str | None = None
    at: float = field(default_factory=time.time)


@dataclass
class _Deployment:
    id: Any
    accepts_gitlab: bool
    fetched_at: float


def _transient(error: BaseException) -> bool:
    if isinstance(error, httpx.TransportError):
        return True
    if isinstance(error, PrefectHTTPStatusError):
        return error.response.status_code >= 500 or error.response.status_code == 429
    return False


async def _with_retries(call: Callable[[], Awaitable[T]]) -> T:
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(PREFECT_ATTEMPTS),
        wait=wait_exponential(multiplier=0.3, max=3),
        retry=retry_if_exception(_transient),
        reraise=True,
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity reraises the last error")


class Launcher:
    def __init__(
        self,
        mapping: GitflowMapping,
        stacks: Mapping[str, str],
        promotion_sources: Mapping[str, str],
        workers: int = 8,
        queue_size: int = 1000,
    ) -> None:
        self.mapping = mapping
        self.stacks = dict(stacks)
        self.promotion_sources = dict(promotion_sources)
        self.worker_count = workers
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=queue_size)
        self.outcomes: deque[Outcome] = deque(maxlen=1000)
        self.counts = {"accepted": 0, "started": 0, "refused": 0, "failed": 0, "unlocked": 0}
        self._deployments: dict[str, _Deployment] = {}
        self._client: PrefectClient | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._handling: dict[str, Job] = {}  # worker name -> the job it is working on
        self._stack = contextlib.AsyncExitStack()
        self.last_delivery = 0.0  # monotonic time of the last delivery the receiver answered

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._client = await self._stack.enter_async_context(get_client())
        self._workers = [
            asyncio.create_task(self._work(f"launcher-{index}"), name=f"launcher-{index}")
            for index in range(self.worker_count)
        ]

    async def stop(self, drain_seconds: float = 10.0) -> None:
        """Finish what was accepted (bounded), then stop the workers."""
        try:
            await asyncio.wait_for(self.queue.join(), drain_seconds)
        except TimeoutError:
            undone = [job.event.delivery_id for job in self._handling.values()]
            while not self.queue.empty():
                undone.append(self.queue.get_nowait().event.delivery_id)
                self.queue.task_done()
            # Redelivering one from GitLab is safe: the idempotency key keeps it to one run.
            logger.warning(
                "stopping after %g s with %d deliveries not done (redeliver them): %s",
                drain_seconds,
                len(undone),
                ", ".join(undone),
            )
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        await self._stack.aclose()

    def submit(self, job: Job) -> bool:
        """Queue a job; False when the queue is full (the caller answers 503, GitLab retries)."""
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            return False
        if job.rules:
            self.counts["accepted"] += 1
        return True

    async def drain(self) -> None:
        await self.queue.join()

    async def _after_the_burst(self) -> None:
        deadline = time.monotonic() + MAX_DEFER_SECONDS
        while (quiet := time.monotonic() - self.last_delivery) < QUIET_SECONDS:
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(QUIET_SECONDS - quiet)

    async def _work(self, name: str) -> None:
        while True:
            job = await self.queue.get()
            self._handling[name] = job
            try:
                await self._after_the_burst()
                await self._handle(job)
            except Exception:  # one bad job must not stop the worker
                logger.exception("delivery %s: handling failed", job.event.delivery_id)
            finally:
                del self._handling[name]
                self.queue.task_done()

    # --- one delivery ----------------------------------------------------------------------------

    async def _handle(self, job: Job) -> None:
        event = job.event
        for body in job.notes:
            await self._note(event, body)
        for rule, reason in job.refused:
            for launch in launches(self.mapping, rule, event):
                self.outcomes.append(Outcome(event.delivery_id, launch.deployment, refused=reason))
                await self._status(event, launch.status_name, "failed", reason)
        for rule in job.rules:
            changed: list[str] | None = None
            if rule.needs_changed_paths:
                changed = await self._changed_paths(event)
                if changed is None:
                    await self._status(
                        event,
                        f"{self.mapping.status_prefix}/{rule.name}",
                        "failed",
                        "could not read the merge request's changes from GitLab",
                    )
                    continue
            planned = launches(self.mapping, rule, event, changed, self.stacks)
            if rule.needs_changed_paths and not planned:
                logger.info(
                    "delivery %s: rule %s: no stack of %s is touched",
                    event.delivery_id,
                    rule.name,
                    ", ".join(rule.environments),
                )
                if event.kind == "note":  # someone asked: say why nothing happens
                    await self._note(event, command_starts_nothing(rule, event))
            for launch in planned:
                await self._launch(event, launch)

    async def _changed_paths(self, event: GitEvent) -> list[str] | None:
        settings = gitlab_settings()
        iid = event.merge_request_iid
        if settings is None or iid is None:
            logger.warning(
                "delivery %s: merge request changes need SOCIALNET_GITLAB_URL", event.delivery_id
            )
            return None

        def read() -> list[str]:
            return shared_gitlab_api(settings).merge_request_changed_paths(event.project_id, iid)

        try:
            return await asyncio.to_thread(read)
        except Exception as error:
            logger.warning("delivery %s: reading the changes failed: %s", event.delivery_id, error)
            return None

    async def _launch(self, event: GitEvent, launch: Launch) -> None:
        outcome = Outcome(event.delivery_id, launch.deployment)
        try:
            run = await self._create_run(launch)
            outcome.flow_run_id = str(run.id)
            self.counts["started"] += 1
            logger.info(
                "delivery %s: %s -> flow run %s (%s)",
                event.delivery_id,
                launch.deployment,
                run.id,
                run.state_type.value if run.state_type else "?",
            )
            # A replayed delivery gets the existing run back: do not move its status backwards.
            if run.state_type in {StateType.SCHEDULED, StateType.PENDING}:
                await self._status(
                    event,
                    launch.status_name,
                    "pending",
                    f"{run.name} scheduled",
                    flow_run_url(PREFECT_UI_URL.value(), run.id),
                )
        except Exception as error:
            self.counts["failed"] += 1
            outcome.error = str(error)[:300]
            logger.warning(
                "delivery %s: %s could not start: %s", event.delivery_id, launch.deployment, error
            )
            await self._status(
                event, launch.status_name, "failed", f"could not start: {outcome.error}"
            )
        finally:
            self.outcomes.append(outcome)

    async def promotion_refusal(self, event: GitEvent, rule: Rule) -> str | None:
        """Why `rule` may not promote the event's commit, or None (rules without the gate: None).

        The receiver asks before answering; the gate's environment is the rule's fixed
        parameters.env (checked at start, gitflow.check_against_catalog).
        """
        if not rule.requires_promotion:
            return None
        source = self.promotion_sources[str(rule.parameters["env"])]
        client = self._require_client()
        variable = await _with_retries(lambda: client.read_variable_by_name(f"ledger-{source}"))
        if variable is None or variable.value is None:
            ledger = Ledger(environment=source)
        else:
            ledger = Ledger.model_validate(variable.value)
        refusal = promotion_refusal(source, ledger, event.sha)
        if refusal:
            self.counts["refused"] += 1
            logger.info("delivery %s: rule %s refused: %s", event.delivery_id, rule.name, refusal)
        return refusal

    async def release_locks(self, event: GitEvent) -> list[str]:
        """The stack locks the event's merge request held, released (webhooks/locks.py); a note
        on the merge request says so, in the background."""
        iid = event.merge_request_iid
        if iid is None:
            return []
        client = self._require_client()
        released = await release_locks(client, event.project_id, iid, self.stacks)
        if released:
            self.counts["unlocked"] += 1
            logger.info("delivery %s: !%d released %s", event.delivery_id, iid, released)
            why = "unlocked" if event.kind == "note" else f"{event.action}d"
            self.submit(
                Job(
                    event,
                    [],
                    notes=[
                        f"socialnet-ops: !{iid} {why}: released the lock of "
                        + ", ".join(f"`{name}`" for name in released)
                        + "; other merge requests can plan them now"
                    ],
                )
            )
        return released

    async def _note(self, event: GitEvent, body: str) -> None:
        if event.merge_request_iid is None:
            return
        await asyncio.to_thread(
            post_merge_request_note, event.project_id, event.merge_request_iid, body
        )

    async def _deployment(self, name: str) -> _Deployment:
        cached = self._deployments.get(name)
        if cached and time.monotonic() - cached.fetched_at < DEPLOYMENT_CACHE_SECONDS:
            return cached
        client = self._require_client()
        try:
            deployment = await _with_retries(lambda: client.read_deployment_by_name(name))
        except ObjectNotFound:
            raise LookupError(
                f"deployment {name} is not registered on the platform (run `socialnet-ops up`)"
            ) from None
        schema = deployment.parameter_openapi_schema or {}
        entry = _Deployment(
            id=deployment.id,
            accepts_gitlab="gitlab" in (schema.get("properties") or {}),
            fetched_at=time.monotonic(),
        )
        self._deployments[name] = entry
        return entry

    async def _create_run(self, launch: Launch) -> Any:
        deployment = await self._deployment(launch.deployment)
        parameters = dict(launch.parameters)
        if deployment.accepts_gitlab:
            parameters["gitlab"] = launch.gitlab
        client = self._require_client()
        return await _with_retries(
            lambda: client.create_flow_run_from_deployment(
                deployment.id,
                parameters=parameters,
                tags=launch.tags,
                idempotency_key=launch.idempotency_key,
            )
        )

    async def _status(
        self,
        event: GitEvent,
        name: str,
        state: Any,
        description: str,
        target_url: str | None = None,
    ) -> None:
        await asyncio.to_thread(
            report_commit_status,
            event.project_id,
            event.sha,
            state,
            target_url,
            description,
            name,
            event.ref or None,
        )

    def _require_client(self) -> PrefectClient:
        if self._client is None:
            raise RuntimeError("the launcher is not started")
        return self._client
