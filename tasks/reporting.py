"""Events and artifacts: what a run leaves behind for the Prefect UI and automations."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.exceptions import MissingContextError

from socialnet_ops.core.results import FlowResult
from socialnet_ops.core.results import artifact_key as artifact_key
from tasks.undo import UndoJournal

R = TypeVar("R", bound=FlowResult)

EVENT_PREFIX = "socialnet"


def environment_resource(environment: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"socialnet.environment.{environment}",
        "prefect.resource.name": environment,
        "socialnet.environment": environment,
    }


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run's logger, or a plain one where no run context exists (a hook of a run whose
    parameters failed validation runs outside it)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("socialnet_ops.events")


def emit(
    event: str, environment: str, labels: dict[str, str] | None = None, **payload: Any
) -> None:
    """Emit `socialnet.<event>` about an environment; automations match on these (and on the
    resource's `labels`)."""
    emit_event(
        event=f"{EVENT_PREFIX}.{event}",
        resource={**environment_resource(environment), **(labels or {})},
        payload={"environment": environment, **payload},
    )
    run_logger().info("event %s.%s %s", EVENT_PREFIX, event, payload)


def publish(result: R) -> R:
    """A flow's result as the run's report artifact and its `socialnet.*` event."""
    report = result.report()
    if report is not None:
        markdown_report(report.key, report.title, dict(report.sections))
    event = result.event()
    if event is not None:
        emit(event.name, result.environment, **event.payload)
    return result


def markdown_report(key: str, title: str, sections: dict[str, Any]) -> None:
    lines = [f"# {title}", ""]
    for heading, body in sections.items():
        lines.append(f"**{heading}**: {body}" if not isinstance(body, list) else f"**{heading}**")
        if isinstance(body, list):
            lines.extend(f"- {item}" for item in body)
    create_markdown_artifact(key=key, markdown="\n".join(lines), description=title)


def table_report(key: str, rows: list[dict[str, Any]], description: str) -> None:
    create_table_artifact(key=key, table=rows, description=description)


def report_undo(environment: str, version: str, error: Exception, journal: UndoJournal) -> None:
    """The undo report of a failed run and `socialnet.release.undone`, when hooks undid anything."""
    if not journal.entries:
        return
    markdown_report(
        artifact_key("undo", environment),
        f"{version} on {environment} failed; "
        + ("what it changed was undone" if journal.complete else "the undo is INCOMPLETE"),
        {
            "why": str(error).splitlines()[0][:300] if str(error) else type(error).__name__,
            "undone": journal.rows(),
        },
    )
    emit(
        "release.undone" if journal.complete else "release.undo-incomplete",
        environment,
        version=version,
        reason=str(error)[:300],
        undone=journal.rows(),
    )
