"""Locks this context already holds, so a nested take of the same lock does not wait for itself.

A release holds its environments' slots for the whole release while its subflows (deploy, canary,
rollback) take them again; a backup flow holds the backup lock while its tasks take it again.
No Prefect here: the callers decide what taking the lock means.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class Holds:
    def __init__(self, name: str) -> None:
        self._held: ContextVar[frozenset[str]] = ContextVar(name, default=frozenset())

    def holds(self, key: str) -> bool:
        return key in self._held.get()

    @contextmanager
    def holding(self, key: str) -> Iterator[None]:
        """Mark `key` held by this context (and the contexts copied from it) until the block ends."""
        token = self._held.set(self._held.get() | {key})
        try:
            yield
        finally:
            self._held.reset(token)
