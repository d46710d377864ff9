"""canary: release a build to a share of users, judge it against stable, promote or abort.

The flow walks the environment's release policy (set weight, pause, analysis) like an Argo Rollouts
canary; the judgement is `socialnet_ops.core.canary.judge`, a pure function of what Prometheus saw for
both tracks. Fail, no data for too long, a refused or unanswered approval: abort (weight 0, canary
replicas stopped, stable untouched, ledger unchanged). Every step passed: promote.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
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
    checked_environment,
    checked_release_settings,
    checked_source,
    manifest_of,
    release_flow,
    release_slot,
)
from socialnet_ops.adapters.builds import check_version
from socialnet_ops.core.canary import (
    AnalysisTally,
    Decision,
    Measurement,
    PlannedStep,
    Verdict,
    check_plan,
    judge,
    plan,
    progress_percent,
)
from socialnet_ops.core.environments import Analysis
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
from tasks.postgres import backup_id, backup_name, check_migrations, migrate, take_predeploy_backup
from tasks.reporting import artifact_key, emit, publish, report_undo, table_report
from tasks.undo import UndoJournal, undoable, undone_failure
from tasks.vault import materialize_secrets, read_secret_versions

# How often a paused run checks whether someone answered in the UI.
APPROVAL_POLL_SECONDS = 2
current_stable_version = serving_version.with_options(cache_policy=NO_CACHE)


class ApprovalInput(RunInput):
    """The form the Prefect UI shows at a manual gate."""

    approve: bool
    comment: str = ""


class NoStableReleaseError(Exception):
    pass


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


# --- the report a person follows in the UI --------------------------------------------------------


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


@dataclass
class CanaryReport:
    """The step table (one row per step and per measurement) and the progress bar."""

    environment: str
    version: str
    steps: list[PlannedStep]
    rows: list[dict[str, str]] = field(default_factory=list)
    progress_id: UUID | None = None

    @property
    def table_key(self) -> str:
        return artifact_key("canary", self.environment)

    def start(self) -> None:
        self.progress_id = cast(
            UUID,
            create_progress_artifact(
                progress=0.0,
                key=artifact_key("canary-progress", self.environment),
                description=f"Canary {self.version} on {self.environment}: starting",
            ),
        )

    def progress(self, done_steps: int, what: str) -> None:
        if self.progress_id is None:
            return
        update_progress_artifact(
            self.progress_id,
            progress_percent(done_steps, len(self.steps)),
            description=f"Canary {self.version} on {self.environment}: {what}",
        )

    def finish(self, what: str) -> None:
        if self.progress_id is not None:
            update_progress_artifact(
                self.progress_id, 100.0, description=f"Canary {self.version}: {what}"
            )

    def row(
        self,
        step: PlannedStep | None,
        weight: int,
        verdict: str,
        why: str,
        measurement: Measurement | None = None,
    ) -> None:
        canary = measurement.canary if measurement else None
        stable = measurement.stable if measurement else None
        self.rows.append(
            {
                "step": step.title if step else "promotion",
                "weight": f"{weight}%",
                "canary requests": _count(canary.requests if canary else None),
                "stable requests": _count(stable.requests if stable else None),
                "canary errors": _ratio(canary.error_ratio if canary else None),
                "stable errors": _ratio(stable.error_ratio if stable else None),
                "canary p95": _ms(canary.p95 if canary else None),
                "stable p95": _ms(stable.p95 if stable else None),
                "canary p99": _ms(canary.p99 if canary else None),
                "stable p99": _ms(stable.p99 if stable else None),
                "verdict": verdict,
                "why": why,
            }
        )
        table_report(self.table_key, self.rows, f"Canary {self.version} on {self.environment}")


# --- walking the steps (the rollout state machine) ----------------------------------------------


@dataclass
class Walk:
    """Where the walk ended: every step passed, or the step that aborted it and why."""

    promote: bool
    reason: str
    weight: int = 0
    step: PlannedStep | None = None
    measurements: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)


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


def run_analysis(
    environment: str,
    version: str,
    stable_version: str,
    step: PlannedStep,
    weight: int,
    analysis: Analysis,
    tally: AnalysisTally,
    report: CanaryReport,
    walk: Walk,
) -> str | None:
    """Measure every interval until the step passes (None) or the policy says abort (why)."""
    logger = get_run_logger()
    started = time.monotonic()
    taken = 0
    while True:
        taken += 1
        # Measure at the end of each interval, so a window holds traffic at this weight.
        time.sleep(max(0.0, started + taken * analysis.interval - time.monotonic()))
        measurement = measure_tracks(environment, stable_version, version, analysis.interval)
        verdict: Verdict = judge(measurement, analysis)
        decision = tally.observe(verdict, duration_elapsed=taken >= step.measurements)
        walk.measurements += 1
        walk.verdicts[verdict.outcome] = walk.verdicts.get(verdict.outcome, 0) + 1
        held = decision is Decision.MEASURE_AGAIN and taken >= step.measurements
        label = verdict.outcome + (" (holding)" if held else "")
        report.row(step, weight, label, verdict.why, measurement)
        logger.info(
            "%s, measurement %d/%d: %s: %s",
            step.title,
            taken,
            step.measurements,
            label,
            verdict.why,
        )
        if decision is Decision.ABORT:
            return tally.abort_reason
        if decision is Decision.STEP_PASSED:
            return None


def walk_steps(
    environment: str,
    version: str,
    stable_version: str,
    steps: list[PlannedStep],
    analysis: Analysis,
    report: CanaryReport,
    record: CanaryRecord,
) -> Walk:
    walk = Walk(promote=False, reason="")
    tally = AnalysisTally(analysis)
    for done, step in enumerate(steps):
        walk.step = step
        report.progress(done, step.title)
        if step.kind == "set_weight":
            assert step.weight is not None
            set_canary_weight(environment, step.weight)
            walk.weight = step.weight
            record_canary(environment, record.model_copy(update={"weight": step.weight}))
            report.row(step, walk.weight, "done", f"{step.weight}% of API requests to {version}")
        elif step.kind == "pause" and step.until_approved:
            approved, why = wait_for_approval(step, version, walk.weight)
            report.row(step, walk.weight, "approved" if approved else "refused", why)
            if not approved:
                walk.reason = f"manual gate: {why}"
                return walk
        elif step.kind == "pause":
            assert step.duration is not None
            time.sleep(step.duration)
            report.row(step, walk.weight, "done", f"paused {step.duration:.0f} s")
        else:
            abort_reason = run_analysis(
                environment, version, stable_version, step, walk.weight, analysis, tally, report,
                walk,
            )  # fmt: skip
            if abort_reason is not None:
                walk.reason = abort_reason
                return walk
    walk.promote = True
    walk.step = None
    walk.reason = f"all {len(steps)} steps passed"
    return walk


# --- the flow ------------------------------------------------------------------------------------


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
        environment = checked_environment(env)
        check_version(version)
        runtime_settings = checked_release_settings(settings)
        source = checked_source(ref)
        policy = environment.release
        steps = plan(policy.steps, policy.analysis)
        check_plan(steps, env)
    logger = get_run_logger()
    clock = StepClock()
    started_at = time.time()
    with release_slot(env) as slot:
        with before_any_change():
            stable_version = current_stable_version(env)
            if stable_version is None:
                raise NoStableReleaseError(
                    f"{env} serves no stable release: a canary needs one to compare with; "
                    f"deploy one first (deploy env={env})"
                )
            if stable_version == version:
                raise ValueError(f"{version} already serves {env}: nothing to release")
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
        report = CanaryReport(env, version, steps)
        report.start()
        record = CanaryRecord(version=version, weight=0, flow_run_id=this_run.get_id())
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
                walk = walk_steps(
                    env, version, stable_version, steps, policy.analysis, report, record
                )
            if walk.promote:
                report.progress(len(steps), "promoting")
                with clock("promotion"):
                    promote_canary(env)
                report.row(None, 100, "promoted", f"{version} replaced {stable_version}")
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
        report.finish(f"aborted at {result.step_title}: {walk.reason}")
        publish(result)  # the rollback report and `socialnet.canary.aborted`
        raise CanaryAbortedError(
            f"canary {version} aborted on {env} at {result.step_title}: {walk.reason}", result
        )
    report.finish(
        f"promoted, serves 100% ({walk.reason}); pre-deploy backup {result.predeploy_backup}"
    )
    logger.info("canary %s promoted on %s: %s", version, env, walk.reason)
    return publish(result)
