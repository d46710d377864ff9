"""The receiver gives a merge request's stack locks back when it is merged or closed (or on the
note command `socialnet-ops unlock`).

Done by the receiver itself, through its Prefect client, rather than by a flow: a flow run waits
for a free worker, and a busy work pool (a long release) would keep a merged merge request's locks
and lock every other merge request out meanwhile; here it takes a few requests, before the reply,
which says what was released. It changes the lock Variables inside the same `stack-locks` mutex as
the plans that take them (tasks/stack_locks.py), so a release and a claim never interleave.
"""

from __future__ import annotations

from collections.abc import Iterable

from prefect.client.orchestration import PrefectClient
from prefect.concurrency.asyncio import concurrency

from socialnet_ops.core.stack_locks import LOCK_MUTEX, StackLock, lock_variable, releases

MUTEX_WAIT_SECONDS = 4.0  # within the receiver's reply budget (GitLab waits 10 s)
MUTEX_LEASE_SECONDS = 60  # the server accepts no shorter lease


async def release_locks(
    client: PrefectClient, project_id: int, merge_request: int, environments: Iterable[str]
) -> list[str]:
    """Delete the locks merge request !`merge_request` holds; the environments released."""
    released = []
    async with concurrency(
        LOCK_MUTEX,
        occupy=1,
        strict=True,
        timeout_seconds=MUTEX_WAIT_SECONDS,
        lease_duration=MUTEX_LEASE_SECONDS,
    ):
        for environment in sorted(set(environments)):
            name = lock_variable(environment)
            variable = await client.read_variable_by_name(name)
            value = variable.value if variable is not None else None
            lock = StackLock.model_validate(value) if isinstance(value, dict) else None
            if releases(lock, project_id, merge_request):
                await client.delete_variable_by_name(name)
                released.append(environment)
    return released
