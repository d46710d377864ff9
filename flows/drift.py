"""drift (scheduled): plan every environment at once; report what reality no longer matches."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from flows.common import checked_environment
from socialnet_ops.core.environments import environment_names
from socialnet_ops.core.results import DriftResult, StackDrift
from socialnet_ops.core.terraform import DriftReport
from tasks.ledger import record_drift
from tasks.reporting import artifact_key, emit, table_report
from tasks.terraform import check_drift


class DriftCheckError(Exception):
    pass


# Plans mostly wait (provider start, API calls): one thread each lets them overlap fully.
# (TaskRunner's type parameter is invariant in Prefect's stubs, hence the ignore.)
@flow(
    name="drift",
    flow_run_name="drift",
    task_runner=ThreadPoolTaskRunner(max_workers=8),  # type: ignore[arg-type]
)
def drift(envs: list[str] | None = None, endpoint: str | None = None) -> DriftResult:
    """Drift (a plan with changes) leaves a table artifact and `socialnet.infra.drift`; none is quiet."""
    names = envs or environment_names()
    for name in names:
        checked_environment(name)
    futures = {name: check_drift.submit(name, endpoint) for name in names}
    # Each record is written as soon as its own check ends, beside the checks still running.
    # (A future as the argument matches only Prefect's untyped overload, hence return_state.)
    records = [record_drift.submit(future, return_state=False) for future in futures.values()]
    wait(list(futures.values()))
    wait(records)
    reports: dict[str, DriftReport] = {}
    failed: dict[str, str] = {}
    for name, future in futures.items():
        if future.state.is_completed():
            reports[name] = future.state.result()
        else:
            failed[name] = str(future.state.message or future.state.name)
    for report in reports.values():
        if report.status == "drifted":
            report_drift(report)
    if failed:
        raise DriftCheckError(
            "drift check failed for " + "; ".join(f"{name}: {why}" for name, why in failed.items())
        )
    result = DriftResult(
        environment=", ".join(names),
        flow_run_id=flow_run.get_id(),
        stacks={
            name: StackDrift(
                status=report.status,
                addresses=report.addresses,
                detail=report.detail,
                seconds=report.seconds,
            )
            for name, report in reports.items()
        },
    )
    get_run_logger().info("%s", result.summary())
    return result


def report_drift(report: DriftReport) -> None:
    table_report(
        artifact_key("drift", report.environment),
        report.changes,
        f"Drift in {report.environment}: {report.detail}",
    )
    emit("infra.drift", report.environment, addresses=report.addresses, summary=report.detail)
