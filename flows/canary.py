"""canary: release a build to a share of users, judge it against stable, promote or abort.

The flow walks the environment's release policy (set weight, pause, analysis) like an Argo Rollouts
canary: `socialnet_ops.core.canary.walk_steps` decides each step, `judge` each measurement (a pure
function of what Prometheus saw for both tracks), and `CanaryRollout` does what they decide. Fail,
no data for too long, a refused or unanswered approval: abort (weight 0, canary replicas stopped,
stable untouched, ledger unchanged). Every step passed: promote.

A canary always ends in a known state. Where it stands (version, step, weight, run, status) is
stored with it by the platform at every step. "Promote now" and "abort now" (the CLI's `promote
--full` / `abort`, the `canary-control` deployment, a gate's form) leave a request there that the
walk obeys before the next step or measurement. A failed, timed-out, crashed or cancelled run
finishes the abort in its hooks; a run killed outright runs none, so every canary run first
aborts (or, `release.on_interrupted: resume`, resumes) a canary a dead run left in flight.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, cast
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.logging.loggers import flow_run_logger
from prefect.runtime import flow_run as this_run
from prefect.states import Crashed, Running

from flows.common import (
    StepClock,
    announce_release_failure,
    checked_release_inputs,
    manifest_of,
    release_flow,
    release_slot,
)
from socialnet_ops.adapters.hooks import LoadGenerator
from socialnet_ops.core.backups import backup_id, backup_name
from socialnet_ops.core.canary import (
    Measurement,
    PlannedStep,
    StepRow,
    check_baseline,
    check_plan,
    interrupted_canary,
    plan,
    post_rollout_of,
    walk_steps,
)
from socialnet_ops.core.canary_report import CanaryReport
from socialnet_ops.core.environments import Analysis
from socialnet_ops.core.failures import before_any_change, one_line
from socialnet_ops.core.ledger import CanaryRecord, ControlRequest
from socialnet_ops.core.results import CanaryResult
from tasks.git import build_release_task
from tasks.health import smoke_test
from tasks.hooks import confirm_gate, post_rollout, pre_rollout_tests, start_load_test
from tasks.ledger import record_canary, record_release
from tasks.metrics import measure_tracks
from tasks.platform import (
    abort_canary,
    clear_canary_request,
    finish_canary_abort,
    keep_canary_record,
    pending_canary_request,
    promote_canary,
    read_canary_record,
    request_canary_action,
    serving_version,
    set_canary_weight,
    start_canary,
    store_canary_record,
)
from tasks.postgres import check_migrations, migrate, take_predeploy_backup
from tasks.reporting import emit, publish, report_undo, table_report
from tasks.undo import UndoJournal, undoable, undone_failure
from tasks.vault import materialize_secrets, read_secret_versions

# How often a paused run checks whether someone answered in the UI.
APPROVAL_POLL_SECONDS = 2
# How often a waiting canary (pause, analysis interval) looks for a promote/abort request.
CONTROL_POLL_SECONDS = 2
current_stable_version = serving_version.with_options(cache_policy=NO_CACHE)


class ApprovalInput(RunInput):
    """The form the Prefect UI shows at a manual gate."""

    approve: bool
    comment: str = ""
    # Argo's `promote --full`: skip every remaining step once approved.
    promote_fully: bool = False


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


def wait_for_approval(env: str, step: PlannedStep, version: str, weight: int) -> tuple[bool, str]:
    """Pause the run until someone answers in the Prefect UI; no answer in time is a no. An
    approval with "promote fully" leaves a promote request, which the walk obeys next."""
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
            "values, migrations, secrets), then approve to continue or leave unchecked to abort. "
            "Approve with **promote fully** to skip the remaining steps."
        ),
        approve=False,
        promote_fully=False,
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
    if answer.approve and answer.promote_fully:
        reason = answer.comment or "approved with promote fully"
        request_canary_action(
            env, ControlRequest(action="promote", by="the Prefect UI", reason=reason)
        )
    if answer.approve:
        return True, f"approved{comment}"
    return False, f"refused{comment}"


@dataclass
class CanaryRollout:
    """What `walk_steps` decides, done: tasks, the approval pause, the report's artifacts."""

    env: str
    stable_version: str
    analysis: Analysis  # the policy's: its interval, custom metrics and latency test
    report: CanaryReport
    record: CanaryRecord
    progress_id: UUID | None = None
    _request: ControlRequest | None = None
    _load: LoadGenerator | None = None

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

    def store(self, **update: Any) -> None:
        """Where the canary stands, stored with it by the platform."""
        self.record = self.record.model_copy(update=update)
        keep_canary_record(self.env, self.record)

    def set_weight(self, weight: int) -> None:
        set_canary_weight(self.env, weight)
        self.store(weight=weight)
        record_canary(self.env, self.record)

    def reached(self, done_steps: int, weight: int) -> None:
        self.store(step=done_steps, weight=weight, status="progressing")

    def request(self) -> ControlRequest | None:
        if self._request is None:
            self._request = pending_canary_request(self.env)
        return self._request

    def approval(self, step: PlannedStep, weight: int) -> tuple[bool, str]:
        self.store(status="paused")
        return wait_for_approval(self.env, step, self.report.version, weight)

    def confirm(self, step: PlannedStep) -> tuple[bool, str]:
        assert step.confirm is not None
        self.store(status="paused")
        return confirm_gate(
            self.env,
            step.confirm,
            step.kind.replace("_", "-"),
            self.report.version,
            self.stable_version,
            stop=lambda: self.request() is not None,
        )

    def pre_rollout(self, step: PlannedStep) -> tuple[bool, str]:
        assert step.hook is not None
        return pre_rollout_tests(self.env, step.hook, self.report.version, self.stable_version)

    def start_load(self, step: PlannedStep) -> None:
        assert step.load is not None
        self._load = start_load_test(self.env, step.load)

    def stop_load(self) -> None:
        """The load test ends with the walk (or earlier, at its own deadline)."""
        if self._load is not None:
            counts = self._load.stop()
            self.log(
                "load test: "
                + ", ".join(f"{t} {c.sent} sent, {c.failed} failed" for t, c in counts.items())
            )
            self._load = None

    def _wait(self, seconds: float) -> None:
        """Sleep, waking within CONTROL_POLL_SECONDS of a promote/abort request."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and self.request() is None:
            time.sleep(min(left, CONTROL_POLL_SECONDS))

    def pause(self, seconds: float) -> None:
        self._wait(seconds)

    def measurements(self, step: PlannedStep) -> Iterator[Measurement]:
        started = time.monotonic()
        for taken in itertools.count(1):
            # Measure at the end of each interval, so a window holds traffic at this weight.
            self._wait(started + taken * self.analysis.interval - time.monotonic())
            if self.request() is not None:  # the walk obeys it before judging this
                yield Measurement.unavailable(
                    "a request ended the analysis", self.analysis.interval
                )
                continue
            yield measure_tracks(
                self.env,
                self.stable_version,
                self.report.version,
                self.analysis.interval,
                self.analysis,
            )

    def log(self, message: str) -> None:
        get_run_logger().info(message)


def mark_dead_run(flow_run_id: str | None, why: str) -> None:
    """The run that left a canary behind died without a word (SIGKILL): say so in the UI."""
    if flow_run_id is None:
        return
    with contextlib.suppress(Exception), get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(flow_run_id)).state
        if state is not None and not state.is_final():
            client.set_flow_run_state(UUID(flow_run_id), Crashed(message=why), force=True)


def settle_interrupted_canary(
    env: str,
    version: str,
    on_interrupted: Literal["abort", "resume"] = "abort",
    total_steps: int = 0,
) -> int:
    """A canary another run left in flight (holding the slot, that run is dead): its abort is
    finished here, or its walk resumed. Returns the step this run's walk starts at.

    deploy and rollback call it with the defaults: they replace stable, so a leftover canary is
    always aborted first."""
    found = interrupted_canary(
        read_canary_record(env), this_run.get_id(), version, on_interrupted, total_steps
    )
    if found is None:
        return 0
    get_run_logger().warning("%s: %s", env, found.why)
    mark_dead_run(found.record.flow_run_id, f"its process died; {found.why}")
    if found.action == "resume":
        return found.record.step
    store_canary_record(env, found.record.model_copy(update={"status": "aborting"}))
    abort_canary(env)
    store_canary_record(env, None)
    record_canary(env, None)
    emit("canary.aborted", env, version=found.record.version, reason=found.why[:300])
    return 0


def finish_canary_on_end(flow: Any, flow_run: Any, state: Any) -> None:
    """on_failure (a timeout included), on_crashed, on_cancellation: the canary this run started
    must not keep serving users. Weight 0, canary replicas stopped, stable untouched."""
    logger = flow_run_logger(flow_run, flow)
    env = str(flow_run.parameters.get("env", ""))
    try:
        finished = finish_canary_abort(env, str(flow_run.id), logger.info)
    except Exception as error:
        logger.error(
            "%s: the canary's abort did not finish (%s); the next canary run of %s finishes it",
            state.name,
            one_line(error),
            env,
        )
        return
    if finished:
        record_canary.fn(env, None)
        emit(
            "canary.aborted",
            env,
            version=flow_run.parameters.get("version"),
            reason=f"the run ended {state.name}: {state.message or ''}"[:300],
        )


@release_flow(
    name="canary",
    flow_run_name="canary-{env}-{version}",
    announce_failure=announce_canary_failure,
    on_end=finish_canary_on_end,
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
        steps = plan(policy.walked_steps, policy.analysis)
        check_plan(steps, env)
    logger = get_run_logger()
    clock = StepClock()
    started_at = time.time()
    with release_slot(env) as slot:
        resume_at = settle_interrupted_canary(env, version, policy.on_interrupted, len(steps))
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
        record = CanaryRecord(
            version=version, weight=0, flow_run_id=this_run.get_id(), step=resume_at
        )
        report = CanaryReport(env, version, steps)
        rollout = CanaryRollout(env, stable_version, policy.analysis, report, record)
        rollout.start()
        try:
            rollout.store()  # before replicas start: a run dying now is known to the next
            with clock("canary start"):
                start_canary(env, version)
            rollout.store()  # replacing another canary dropped its record
            clear_canary_request(env)  # a request left for a dead run is not this run's
            record_canary(env, rollout.record)
            emit(
                "canary.started",
                env,
                version=version,
                stable=stable_version,
                steps=[step.title for step in steps],
            )
            with clock("steps"):
                try:
                    walk = walk_steps(
                        steps,
                        policy.analysis,
                        version,
                        rollout,
                        resume_at,
                        ab_mode=policy.traffic.mode == "ab",
                    )
                finally:
                    rollout.stop_load()
            if walk.promote:
                rollout.store(status="promoting")
                rollout.progress(len(steps), "promoting")
                with clock("promotion"):
                    promote_canary(env)
                rollout.row(StepRow(None, 100, "promoted", f"{version} replaced {stable_version}"))
        except Exception as error:
            # Whatever went wrong, the canary must not keep serving users.
            logger.error("canary %s failed (%s): aborting it", version, error)
            with contextlib.suppress(Exception):  # the abort matters, not its mark
                rollout.store(status="aborting")
            abort_canary(env)
            record_canary(env, None)
            emit("canary.aborted", env, version=version, reason=f"the flow failed: {error}"[:300])
            raise
        if walk.promote:
            with clock("smoke test"):
                smoke_test(env, version)
            manifest = manifest_of(environment, build, secret_versions, backup_id(backup))
            record_release(env, build, policy.strategy, manifest)
        else:
            rollout.store(status="aborting")
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
    if (hook := post_rollout_of(steps)) is not None:
        post_rollout(env, hook, version, stable_version, result.outcome, walk.reason)
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
