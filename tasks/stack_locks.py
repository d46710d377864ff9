"""Stack locks in Prefect: one Variable per stack (`stack-lock-<env>`), every read-modify-write
inside the `stack-locks` global concurrency limit (one slot) used as a mutex, so two plans of
different merge requests cannot both take a free lock, on any worker (the model and the decisions:
socialnet_ops/core/stack_locks.py). The webhook receiver releases locks with the same mutex
(webhooks/locks.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.variables import Variable

from socialnet_ops.core.merge_requests import PlanRefusedError
from socialnet_ops.core.stack_locks import (
    LOCK_MUTEX,
    Claim,
    PlanRecord,
    StackLock,
    claim,
    lock_variable,
    releases,
    with_apply,
    with_plan,
)

# Each change holds the mutex for a few requests; a holder that died frees it within the lease.
MUTEX_WAIT_SECONDS = 60
MUTEX_LEASE_SECONDS = 60  # the server accepts no shorter lease


class LockLostError(PlanRefusedError):
    """The merge request no longer holds the lock it planned under (merged, closed, unlocked)."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextmanager
def lock_mutex() -> Iterator[None]:
    with concurrency(
        LOCK_MUTEX,
        occupy=1,
        strict=True,
        timeout_seconds=MUTEX_WAIT_SECONDS,
        lease_duration=MUTEX_LEASE_SECONDS,
    ):
        yield


def read_lock(env: str) -> StackLock | None:
    value = Variable.get(lock_variable(env), default=None)
    return StackLock.model_validate(value) if isinstance(value, dict) else None


def _write(lock: StackLock) -> None:
    Variable.set(lock_variable(lock.environment), lock.model_dump(mode="json"), overwrite=True)


@task(name="stack-lock-claim", cache_policy=NO_CACHE)
def claim_stack_lock(env: str, project_id: int, merge_request: int) -> Claim:
    """Take `env`'s lock for merge request !`merge_request`, or re-use its own; refused (the
    holder's lock returned) when another merge request holds it."""
    with lock_mutex():
        decided = claim(read_lock(env), env, project_id, merge_request, now())
        if decided.granted:
            _write(decided.lock)
    logger = get_run_logger()
    if decided.granted:
        logger.info("%s: locked by !%d", env, merge_request)
    else:
        logger.warning("%s", decided.refusal())
    return decided


@task(name="stack-lock-read", cache_policy=NO_CACHE)
def read_stack_lock(env: str) -> StackLock | None:
    return read_lock(env)


@task(name="stack-lock-record-plan", cache_policy=NO_CACHE)
def record_plan(env: str, project_id: int, merge_request: int, record: PlanRecord) -> StackLock:
    """The saved plan becomes the one !`merge_request` may apply (if it still holds the lock)."""
    with lock_mutex():
        lock = read_lock(env)
        if lock is None or not lock.held_by(project_id, merge_request):
            raise LockLostError(
                f"{env}: !{merge_request} no longer holds the lock (merged, closed or unlocked "
                "while planning); the plan is not kept"
            )
        updated = with_plan(lock, record)
        _write(updated)
    return updated


@task(name="stack-lock-record-apply", cache_policy=NO_CACHE)
def record_apply(
    env: str, project_id: int, merge_request: int, flow_run_id: str | None
) -> StackLock | None:
    """Mark the plan applied, so the same plan is never applied twice."""
    with lock_mutex():
        lock = read_lock(env)
        if lock is None or not lock.held_by(project_id, merge_request) or lock.plan is None:
            return None
        updated = with_apply(lock, now(), flow_run_id)
        _write(updated)
    return updated


def release_stack_locks(project_id: int, merge_request: int, environments: list[str]) -> list[str]:
    """Remove the locks !`merge_request` holds among `environments`; the ones removed."""
    released = []
    with lock_mutex():
        for env in environments:
            if releases(read_lock(env), project_id, merge_request):
                Variable.unset(lock_variable(env))
                released.append(env)
    return released
