"""Transactional undo: what earlier steps changed is undone when a later one fails.

A flow opens `undoable()` (a Prefect transaction) around steps whose tasks carry on_rollback
hooks; each hook undoes through `undo_step`, which writes what it did into the journal the flow
reports. Tasks inside must not use Prefect retries (a retried task rolls the transaction back on
its first failed attempt): they retry inside their body.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from prefect import get_run_logger
from prefect.transactions import CommitMode, Transaction, get_transaction, transaction


@dataclass
class UndoEntry:
    what: str
    outcome: str  # "undone" or "undo failed: <why>"

    @property
    def ok(self) -> bool:
        return self.outcome == "undone"

    def describe(self) -> str:
        return f"{self.what}: {self.outcome}"


@dataclass
class UndoJournal:
    """What the rollback hooks of a failed transaction undid, for the run's report."""

    entries: list[UndoEntry] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return bool(self.entries) and all(entry.ok for entry in self.entries)

    def rows(self) -> list[str]:
        return [entry.describe() for entry in self.entries]


_JOURNAL: ContextVar[UndoJournal | None] = ContextVar("undo_journal", default=None)


class ReleaseUndoneError(Exception):
    """A stage failed and the rollback hooks undid what the earlier stages had changed."""


@contextmanager
def undoable(journal: UndoJournal | None = None) -> Iterator[UndoJournal]:
    """A Prefect transaction whose tasks' on_rollback hooks report into `journal`.

    Each flow's undo is its own: the transaction is detached from any outer one (a subflow's
    committed migration is never undone by its parent). Its tasks stay staged until the block
    ends (LAZY: a task that committed on its own could no longer be rolled back).
    """
    journal = journal if journal is not None else UndoJournal()
    token = _JOURNAL.set(journal)
    detached = Transaction.__var__.set(None)  # type: ignore[arg-type]
    try:
        with transaction(commit_mode=CommitMode.LAZY):
            yield journal
    finally:
        Transaction.__var__.reset(detached)
        _JOURNAL.reset(token)


def undo_step(what: str, action: Callable[[], object]) -> None:
    """Run one undo inside an on_rollback hook; a failure is journaled, never hides the others."""
    journal = _JOURNAL.get()
    logger = get_run_logger()
    try:
        action()
    except Exception as error:  # the other undos must still run
        logger.error("undo of %s failed: %s", what, error)
        outcome = f"undo failed: {str(error).splitlines()[0][:200] if str(error) else type(error).__name__}"
    else:
        logger.warning("undone: %s", what)
        outcome = "undone"
    if journal is not None:
        journal.entries.append(UndoEntry(what, outcome))


def remember(**values: Any) -> None:
    """Inside a task: what its on_rollback hook will need (the hook gets the task's transaction)."""
    current = get_transaction()
    if current is not None:
        for name, value in values.items():
            current.set(name, value)


def recalled(txn: Transaction, name: str) -> Any:
    return txn.get(name, None)


def undone_failure(error: Exception, journal: UndoJournal) -> Exception:
    """The error a flow raises after its hooks ran: the cause and what was undone."""
    if not journal.entries:
        return error
    summary = "; ".join(journal.rows())
    if journal.complete:
        return ReleaseUndoneError(f"{error} (undone: {summary})")
    return RuntimeError(f"{error} (undo incomplete: {summary})")
