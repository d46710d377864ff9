"""canary: release a build to a share of users, judge it against stable, promote or abort.

The flow walks the environment's release policy (set weight, pause, analysis) like an Argo Rollouts
canary: `socialnet_ops.core.canary.walk_steps` decides each step, `judge` each measurement (a pure
function of what Prometheus saw for both tracks), and `CanaryRollout` does what they decide. Fail,
no data for too long, a refused or unanswered approval: abort (weight 0, canary replicas stopped,
stable untouched, ledger unchanged). Every step passed: promote.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run as this_run
from prefect.states import Running

from flows.common import (
    StepClock,
    announce_release_failure,
    checked_release_inputs,
    manifest_of,
    release_flow,
    release_slot,
)
from socialnet_ops.core.backups import backup_id, backup_name
from socialnet_ops.core.canary import (
    Measurement,
    PlannedStep,
    StepRow,
    check_baseline,
    check_plan,
    plan,
    walk_steps,
)
from socialnet_ops.core.canary_report import CanaryReport
from socialnet_ops.core.failures import before_any_change
from socialnet_ops.core.ledger import CanaryRecord
from socialnet_ops.core.results import CanaryResult
from tasks.git import build_release_task
from tasks.health import smoke_test
from tasks.ledger import record_canary, record_release
from tasks.metrics import measure_tracks
from tasks.platform import (
    abort_canary,
    promote_canary,
    serving_version,
    set_canary_weight,
    start_canary,
)
from tasks.postgres import check_migrations, migrate, take_predeploy_backup
from tasks.reporting import emit, publish, report_undo, table_report
from tasks.undo import UndoJournal, undoable, undone_failure
from tasks.vault import materialize_secrets, read_secret_versions

# How often a paused run checks whether someone answered in the UI.
APPROVAL_POLL_SECONDS = 2
current_stable_version = serving_version.with_options(cache_policy=NO_CACHE)


class ApprovalInput(RunInput):
    """The form the Prefect UI shows at a manual gate."""

    approve: bool
    comment: str = ""


class CanaryAbortedError(Exception):
    """The canary was judged and rolled back; `details` holds the flow's result."""

    def __init__(self, message: str, details: CanaryResult) -> None:
        super().__init__(message)
        self.details = details

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.details))


def announce_canary_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """on_failure: a judged abort left stable untouched, nothing to restore; anything else did not.

    An unexpected failure (e.g. during promotion) emits `socialnet.release.failed`, which runs the
    rollback automation back to the release the ledger records as stable.
    """
    if CanaryAbortedError.__name__ in str(state.message or ""):
        return
    announce_release_failure(flow, flow_run, state)


def resume_own_run() -> None:
    """After a pause timed out the run is still Paused: its abort tasks need it Running."""
    run_id = this_run.get_id()
    assert run_id is not None, "called outside a flow run"
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Running(), force=True)


def wait_for_approval(step: PlannedStep, version: str, weight: int) -> tuple[bool, str]:
    """Pause the run until someone answers in the Prefect UI; no answer in time is a no."""
    assert step.timeout is not None
    logger = get_run_logger()
    logger.info(
        "canary %s at %d%%: waiting up to %.0f s for approval in the Prefect UI",
        version,
        weight,
        step.timeout,
    )
    form = ApprovalInput.with_initial_data(
        description=(
            f"Canary **{version}** serves **{weight}%** of traffic. Check the canary table "
            "artifact and the release diff (artifact `diff-<environment>`: commits, chart and "
            "values, migrations, secrets), then approve to continue or leave unchecked to abort."
        ),
        approve=False,
    )
    try:
        answer = pause_flow_run(
            wait_for_input=form,
            timeout=max(1, round(step.timeout)),
            poll_interval=APPROVAL_POLL_SECONDS,
        )
    except FlowPauseTimeout:
        resume_own_run()
        return False, f"no answer within {step.timeout:.0f} s"
    comment = f": {answer.comment}" if answer.comment else ""
    if answer.approve:
        return True, f"approved{comment}"
    return False, f"refused{comment}"


@dataclass
class CanaryRollout:
    """What `walk_steps` decides, done: tasks, the approval pause, the report's artifacts."""

    env: str
    stable_version: str
    interval: float
    report: CanaryReport
    record: CanaryRecord
    progress_id: UUID | None = None

    def start(self) -> None:
        percent, description = self.report.progress(0, "starting")
        artifact = create_progress_artifact(percent, self.report.progress_key, description)
        self.progress_id = cast(UUID, artifact)

    def progress(self, done_steps: int, what: str) -> None:
        if self.progress_id is not None:
            percent, description = self.report.progress(done_steps, what)
            update_progress_artifact(self.progress_id, percent, description=description)

    def finish(self, what: str) -> None:
        if self.progress_id is not None:
            update_progress_artifact(
                self.progress_id, 100.0, description=self.report.finished(what)
            )

    def row(self, row: StepRow) -> None:
        table_report(self.report.table_key, self.report.add(row), self.report.title)

    def set_weight(self, weight: int) -> None:
        set_canary_weight(self.env, weight)
        record_canary(self.env, self.record.model_copy(update={"weight": weight}))

    def approval(self, step: PlannedStep, weight: int) -> tuple[bool, str]:
        return wait_for_approval(step, self.report.version, weight)

    def pause(self, seconds: float) -> None:
        time.sleep(seconds)

    def measurements(self, step: PlannedStep) -> Iterator[Measurement]:
        started = time.monotonic()
        for taken in itertools.count(1):
            # Measure at the end of each interval, so a window holds traffic at this weight.
            time.sleep(max(0.0, started + taken * self.interval - time.monotonic()))
            yield measure_tracks(self.env, self.stable_version, self.report.version, self.interval)

    def log(self, message: str) -> None:
        get_run_logger().info(message)


@release_flow(
    name="canary", flow_run_name="canary-{env}-{version}", announce_failure=announce_canary_failure
)
def canary(
    env: str,
    version: str,
    ref: str | None = None,
    settings: dict[str, str] | None = None,
    allow_contracting_migrations: bool = False,
) -> CanaryResult:
    with before_any_change():
        environment, runtime_settings, source = checked_release_inputs(env, version, settings, ref)
        policy = environment.release
        steps = plan(policy.steps, policy.analysis)
        check_plan(steps, env)
    logger = get_run_logger()
    clock = StepClock()
    started_at = time.time()
    with release_slot(env) as slot:
        with before_any_change():
            stable_version = check_baseline(env, version, current_stable_version(env))
            with clock("build"):
                build = build_release_task(env, version, source, runtime_settings)
            materialize_secrets(env)  # as the deploy flow: Vault's values before migrations
            secret_versions = read_secret_versions(env)
            pending = check_migrations(
                env, version, allow_contracting_migrations or policy.allow_contracting_migrations
            )
        journal = UndoJournal()
        try:
            with undoable(journal):  # a failed migration restores the pre-deploy backup
                with clock("pre-deploy backup"):
                    backup = take_predeploy_backup(env, version) if environment.backup else None
                with clock("migrations"):
                    migrate(env, version)
        except Exception as error:
            report_undo(env, version, error, journal)
            raise undone_failure(error, journal) from error
        record = CanaryRecord(version=version, weight=0, flow_run_id=this_run.get_id())
        report = CanaryReport(env, version, steps)
        rollout = CanaryRollout(env, stable_version, policy.analysis.interval, report, record)
        rollout.start()
        try:
            with clock("canary start"):
                start_canary(env, version)
            record_canary(env, record)
            emit(
                "canary.started",
                env,
                version=version,
                stable=stable_version,
                steps=[step.title for step in steps],
            )
            with clock("steps"):
                walk = walk_steps(steps, policy.analysis, version, rollout)
            if walk.promote:
                rollout.progress(len(steps), "promoting")
                with clock("promotion"):
                    promote_canary(env)
                rollout.row(StepRow(None, 100, "promoted", f"{version} replaced {stable_version}"))
        except Exception as error:
            # Whatever went wrong, the canary must not keep serving users.
            logger.error("canary %s failed (%s): aborting it", version, error)
            abort_canary(env)
            record_canary(env, None)
            emit("canary.aborted", env, version=version, reason=f"the flow failed: {error}"[:300])
            raise
        if walk.promote:
            with clock("smoke test"):
                smoke_test(env, version)
            manifest = manifest_of(environment, build, secret_versions, backup_id(backup))
            record_release(env, build, "canary", manifest)
        else:
            with clock("abort"):
                abort_canary(env)
            record_canary(env, None)
    result = CanaryResult(
        environment=env,
        flow_run_id=this_run.get_id(),
        version=version,
        stable=stable_version,
        outcome="promoted" if walk.promote else "aborted",
        reason=walk.reason,
        step=walk.step.number if walk.step else None,
        step_title=walk.step.title if walk.step else None,
        weight=walk.weight,
        measurements=walk.measurements,
        verdicts=walk.verdicts,
        migrations=pending,
        predeploy_backup=backup_name(backup),
        seconds=clock.seconds,
        started_at=started_at,
        ended_at=time.time(),
        slot_taken_at=slot.taken_at,
        slot_released_at=slot.released_at,
    )
    if not walk.promote:
        rollout.finish(f"aborted at {result.step_title}: {walk.reason}")
        publish(result)  # the rollback report and `socialnet.canary.aborted`
        raise CanaryAbortedError(
            f"canary {version} aborted on {env} at {result.step_title}: {walk.reason}", result
        )
    rollout.finish(
        f"promoted, serves 100% ({walk.reason}); pre-deploy backup {result.predeploy_backup}"
    )
    logger.info("canary %s promoted on %s: %s", version, env, walk.reason)
    return publish(result)
