"""What a failed run means for the automations: rejected (nothing changed) or failed (it did).

A run that failed before it changed anything (an unknown environment, version or ref, invalid
parameters, a refused gate, nothing to roll back, a build that did not build) is *rejected*: no
rollback and no alert follow it, since there is nothing to undo and nothing broke. Only a run
that changed something and then failed may start a rollback.

An exception is marked with a note (`BaseException.add_note`), not wrapped: its type and message
stay what the caller and the tests know, and the note survives Prefect's result pickling, so a
state hook reading the run's exception sees it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

NOTHING_CHANGED = "socialnet-ops: rejected before anything changed"
# Prefect's own words for parameters that failed validation: the run never started.
_INVALID_PARAMETERS = "invalid parameters"


class RejectedError(ValueError):
    """A run refused its input before it changed anything."""


def mark_unchanged(error: BaseException) -> BaseException:
    """Say of `error` that it happened before anything changed (once)."""
    if NOTHING_CHANGED not in getattr(error, "__notes__", ()):
        error.add_note(NOTHING_CHANGED)
    return error


@contextmanager
def before_any_change() -> Iterator[None]:
    """Whatever fails inside changed nothing: checks, reads, builds into a scratch place."""
    try:
        yield
    except Exception as error:
        mark_unchanged(error)
        raise


def changed_nothing(error: BaseException | None, message: str | None = None) -> bool:
    """Whether a run that failed with `error` (and state `message`) left everything as it was."""
    if isinstance(error, RejectedError):
        return True
    if error is not None and NOTHING_CHANGED in getattr(error, "__notes__", ()):
        return True
    return _INVALID_PARAMETERS in (message or "")


def one_line(error: BaseException | str, limit: int = 300) -> str:
    """The first line of an error's message, for events, reports and the CLI."""
    text = str(error).strip()
    if isinstance(error, BaseException) and not text:
        text = type(error).__name__
    first = text.splitlines()[0] if text else ""
    if isinstance(error, BaseException) and "invalid parameters" in first:
        # Prefect puts the field on the next line: keep it on this one.
        head, *fields = [line.strip(" -") for line in text.splitlines() if line.strip()]
        first = f"{head.rstrip(':')}: {'; '.join(fields)}" if fields else head
    return first[:limit]
