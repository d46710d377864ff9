"""Canary judgement and the canary's step state machine. Pure: no Prefect, no I/O.

Two seams, as in Argo Rollouts:

- `judge` turns one measurement of both tracks into a `Verdict` (pass / fail / inconclusive) with
  the reasons a person reads in the step table. It compares the canary with the stable baseline
  (Kayenta-style): a one-sided two-proportion z-test on the 5xx ratios and a bound on the ratio of
  the latency quantiles, besides the policy's fixed error ratio ceiling. These are the built-in
  `errors` and `latency` checks; `core.canary_analysis` judges the policy's custom metrics, the
  latency distribution test and the weighted score, and combines the checks into the verdict.
- `AnalysisTally` is the state machine of the analysis steps: it counts failures and inconclusive
  verdicts against the policy's limits and says after each verdict whether to measure again,
  move to the next step, or abort. `plan` lists the policy's steps.
- `walk_steps` walks them: it decides what each step does, when the canary aborts and when it is
  promoted; the flow does what it decides through a `Rollout` (tasks, pauses, artifacts). It
  stores the step reached, obeys a promote-now / abort-now request, and resumes at a stored step.
- `interrupted_canary` says what a run does with a canary a dead run left in flight.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal, Protocol

from socialnet_ops.core.canary_analysis import (
    Check,
    MetricReading,
    combine,
    judge_metric,
    latency_distribution_check,
)
from socialnet_ops.core.environments import (
    Analysis,
    AnalysisStep,
    CanaryStep,
    ConfirmPromotionStep,
    ConfirmRolloutStep,
    ConfirmSpec,
    HookSpec,
    LoadTestSpec,
    LoadTestStep,
    PauseStep,
    PostRolloutSpec,
    PostRolloutStep,
    PreRolloutStep,
    SetWeightStep,
    StepKind,
)
from socialnet_ops.core.ledger import CanaryRecord, ControlRequest

Outcome = Literal["pass", "fail", "inconclusive"]

# The stable quantile is raised to this floor before the ratio is taken. 2 ms against 4 ms is a
# doubling no user notices; `histogram_quantile` interpolates inside the app's coarse low buckets
# (5, 10, 25, 50, 75, 100 ms), so a few requests moving between buckets swing an estimate; and a
# canary's smaller sample has a noisier tail (its p95 is the 3rd slowest of 60 requests). A
# canary fails on latency only above max_latency_ratio x 100 ms at least (150 ms at 1.5x).
LATENCY_FLOOR_SECONDS = 0.1

# A statistically significant difference in error ratios smaller than this (0.1 percentage point)
# is not a failure by itself: at high traffic the z-test finds meaningless differences.
ERROR_RATIO_TOLERANCE = 0.001


# --- measurements --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackSample:
    """One track over one analysis window: user requests, 5xx answers, latency quantiles (s)."""

    requests: float
    errors: float
    p95: float | None = None
    p99: float | None = None
    # The latency histogram over the window: (upper bound `le`, cumulative count), for
    # `latency_test: mann_whitney`; empty when the policy does not ask for it.
    buckets: tuple[tuple[float, float], ...] = ()

    @property
    def error_ratio(self) -> float | None:
        return self.errors / self.requests if self.requests > 0 else None

    def quantile(self, name: Literal["p95", "p99"]) -> float | None:
        return self.p95 if name == "p95" else self.p99


@dataclass(frozen=True)
class Measurement:
    """What the metrics provider saw for both tracks; `problem` says why there is nothing."""

    canary: TrackSample | None
    stable: TrackSample | None
    window_seconds: float
    problem: str | None = None
    # What the providers of the policy's custom metrics read (`release.analysis.metrics`).
    metrics: tuple[MetricReading, ...] = ()

    @classmethod
    def unavailable(cls, problem: str, window_seconds: float) -> Measurement:
        return cls(canary=None, stable=None, window_seconds=window_seconds, problem=problem)


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reasons: tuple[str, ...]
    p_value: float | None = None
    latency_ratio: float | None = None
    score: float | None = None  # the weighted score, when the policy has `score`
    checks: tuple[Check, ...] = ()

    @property
    def why(self) -> str:
        return "; ".join(self.reasons)


# --- statistics ----------------------------------------------------------------------------------


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def two_proportion_z_test(
    canary_errors: float, canary_total: float, stable_errors: float, stable_total: float
) -> tuple[float, float]:
    """Pooled two-proportion z-test, one-sided (H1: the canary's error ratio is higher).

    Returns (z, p-value). Equal proportions with no variance (both 0 % or both 100 %) give z = 0
    and p = 1: nothing tells the tracks apart.
    """
    if canary_total <= 0 or stable_total <= 0:
        raise ValueError("both tracks need at least one request")
    p_canary = canary_errors / canary_total
    p_stable = stable_errors / stable_total
    pooled = (canary_errors + stable_errors) / (canary_total + stable_total)
    variance = pooled * (1 - pooled) * (1 / canary_total + 1 / stable_total)
    if variance <= 0:
        return 0.0, 1.0
    z = (p_canary - p_stable) / math.sqrt(variance)
    return z, normal_sf(z)


# --- the judgement -------------------------------------------------------------------------------


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.1f}%"


def _ms(seconds: float) -> str:
    return "inf" if math.isinf(seconds) else f"{seconds * 1000:.0f} ms"


def judge(
    measurement: Measurement,
    analysis: Analysis,
    latency_floor_seconds: float = LATENCY_FLOOR_SECONDS,
) -> Verdict:
    """Canary against stable for one window: pass, fail or inconclusive, with reasons."""
    window = f"{measurement.window_seconds:.0f} s"
    if measurement.problem is not None:
        return Verdict("inconclusive", (f"no measurement: {measurement.problem}",))
    canary, stable = measurement.canary, measurement.stable
    if canary is None or canary.requests <= 0:
        return Verdict(
            "inconclusive", (f"no canary request in the last {window} (no data from Prometheus)",)
        )
    if canary.requests < analysis.min_requests:
        return Verdict(
            "inconclusive",
            (
                f"{canary.requests:.0f} canary requests in {window}, fewer than the "
                f"{analysis.min_requests} the policy needs to judge",
            ),
        )

    baseline = stable if stable is not None and stable.requests > 0 else None
    errors, p_value = _error_check(canary, baseline, analysis)
    latency_ratio: float | None = None
    if analysis.latency_test == "mann_whitney":
        latency = latency_distribution_check(
            canary.buckets,
            baseline.buckets if baseline is not None else (),
            analysis.significance,
            analysis.max_slower_probability,
            window,
            analysis.builtin_weights.latency,
        )
    else:
        latency, latency_ratio = _latency_check(
            canary, baseline, analysis, latency_floor_seconds, window
        )
    readings = {reading.name: reading for reading in measurement.metrics}
    checks = (
        errors,
        latency,
        *(judge_metric(metric, readings.get(metric.name), window) for metric in analysis.metrics),
    )
    combined = combine(checks, analysis.score)
    return Verdict(
        combined.outcome,
        combined.reasons,
        p_value=p_value,
        latency_ratio=latency_ratio,
        score=combined.score,
        checks=checks,
    )


def _error_check(
    canary: TrackSample, stable: TrackSample | None, analysis: Analysis
) -> tuple[Check, float | None]:
    """The built-in `errors` check: the fixed ceiling, then canary against stable."""
    failures: list[str] = []
    notes: list[str] = []
    canary_ratio = canary.errors / canary.requests
    if canary_ratio > analysis.max_error_ratio:
        failures.append(
            f"canary error ratio {_percent(canary_ratio)} is above the policy's "
            f"{_percent(analysis.max_error_ratio)}"
        )
    p_value: float | None = None
    if stable is not None:
        stable_ratio = stable.errors / stable.requests
        z, p_value = two_proportion_z_test(
            canary.errors, canary.requests, stable.errors, stable.requests
        )
        comparison = (
            f"error ratio {_percent(canary_ratio)} ({canary.errors:.0f}/{canary.requests:.0f}) "
            f"vs stable {_percent(stable_ratio)} ({stable.errors:.0f}/{stable.requests:.0f}), "
            f"z={z:.2f} p={p_value:.3g}"
        )
        if p_value < analysis.significance and canary_ratio - stable_ratio > ERROR_RATIO_TOLERANCE:
            failures.append(f"{comparison}: significantly worse (p < {analysis.significance})")
        else:
            notes.append(comparison)
    else:
        notes.append(
            f"error ratio {_percent(canary_ratio)}; stable served no request, so only the "
            "fixed ceiling applies"
        )
    weight = analysis.builtin_weights.errors
    if failures:
        return Check("errors", "fail", tuple(failures), weight), p_value
    return Check("errors", "pass", tuple(notes), weight), p_value


def _latency_check(
    canary: TrackSample,
    stable: TrackSample | None,
    analysis: Analysis,
    latency_floor_seconds: float,
    window: str,
) -> tuple[Check, float | None]:
    """The built-in `latency` check (`latency_test: quantile`): the policy's quantile, canary
    over stable, the stable value floored."""
    weight = analysis.builtin_weights.latency
    quantile = analysis.latency_quantile
    canary_latency = canary.quantile(quantile)
    stable_latency = stable.quantile(quantile) if stable is not None else None
    if canary_latency is None:
        reason = f"no {quantile} latency for the canary in {window}"
        return Check("latency", "inconclusive", (reason,), weight), None
    if stable_latency is None:
        reason = f"{quantile} {_ms(canary_latency)}; no stable latency to compare with"
        return Check("latency", "pass", (reason,), weight), None
    baseline = max(stable_latency, latency_floor_seconds)
    latency_ratio = canary_latency / baseline
    floored = (
        f" (floored to {_ms(latency_floor_seconds)})"
        if stable_latency < latency_floor_seconds
        else ""
    )
    comparison = (
        f"{quantile} {_ms(canary_latency)} vs stable {_ms(stable_latency)}{floored}: "
        f"{latency_ratio:.2f}x"
    )
    if latency_ratio > analysis.max_latency_ratio:
        reason = f"{comparison}, above the policy's {analysis.max_latency_ratio}x"
        return Check("latency", "fail", (reason,), weight), latency_ratio
    reason = f"{comparison} (limit {analysis.max_latency_ratio}x)"
    return Check("latency", "pass", (reason,), weight), latency_ratio


# --- the step state machine ----------------------------------------------------------------------


class Decision(Enum):
    MEASURE_AGAIN = "measure again"
    STEP_PASSED = "step passed"
    ABORT = "abort"


@dataclass
class AnalysisTally:
    """Verdicts of one canary against the policy's limits (counted across all analysis steps).

    - fail: one more failure; above `failure_limit` the canary aborts.
    - inconclusive: the canary holds at its weight and measures again; more than
      `inconclusive_limit` in a row aborts (no data must never lead to promotion).
    - pass: an analysis step ends once its duration has elapsed and its latest verdict passed.
    """

    analysis: Analysis
    failures: int = 0
    inconclusive_in_a_row: int = 0
    inconclusive_total: int = 0
    passes: int = 0
    abort_reason: str | None = field(default=None)

    def observe(self, verdict: Verdict, duration_elapsed: bool) -> Decision:
        if verdict.outcome == "fail":
            self.failures += 1
            if self.failures > self.analysis.failure_limit:
                self.abort_reason = (
                    f"analysis failed {self.failures} time(s), the policy allows "
                    f"{self.analysis.failure_limit}: {verdict.why}"
                )
                return Decision.ABORT
            return Decision.MEASURE_AGAIN
        if verdict.outcome == "inconclusive":
            self.inconclusive_in_a_row += 1
            self.inconclusive_total += 1
            if self.inconclusive_in_a_row > self.analysis.inconclusive_limit:
                self.abort_reason = (
                    f"{self.inconclusive_in_a_row} inconclusive analyses in a row, the policy "
                    f"allows {self.analysis.inconclusive_limit}: {verdict.why}"
                )
                return Decision.ABORT
            return Decision.MEASURE_AGAIN
        self.passes += 1
        self.inconclusive_in_a_row = 0
        return Decision.STEP_PASSED if duration_elapsed else Decision.MEASURE_AGAIN


@dataclass(frozen=True)
class PlannedStep:
    """One policy step, numbered from 1, with what it means in words."""

    number: int
    kind: StepKind
    weight: int | None = None  # set_weight
    duration: float | None = None  # timed pause, analysis
    until_approved: bool = False
    timeout: float | None = None  # gated pause
    measurements: int = 0  # analysis: measurements its duration holds
    hook: HookSpec | None = None  # pre_rollout
    confirm: ConfirmSpec | None = None  # confirm_rollout, confirm_promotion
    load: LoadTestSpec | None = None  # load_test
    post: PostRolloutSpec | None = None  # post_rollout

    @property
    def is_gate(self) -> bool:
        """A step someone (a person, a URL) must say yes to."""
        return self.until_approved or self.confirm is not None

    @property
    def title(self) -> str:
        if self.kind == "set_weight":
            return f"step {self.number}: set weight {self.weight}%"
        if self.hook is not None:
            how = f"POST {self.hook.url}" if self.hook.url else " ".join(self.hook.command or [])
            return f"step {self.number}: pre-rollout tests against the canary ({how})"
        if self.confirm is not None:
            what = self.kind.replace("confirm_", "confirm ")
            who = self.confirm.url or "approval in the Prefect UI"
            return f"step {self.number}: {what} ({who}, timeout {self.confirm.timeout:.0f} s)"
        if self.load is not None:
            return (
                f"step {self.number}: load test {self.load.rate:g} req/s per track for up to "
                f"{self.load.duration:.0f} s"
            )
        if self.post is not None:
            return f"step {self.number}: post-rollout notification"
        if self.kind == "pause" and self.until_approved:
            return f"step {self.number}: wait for approval (timeout {self.timeout:.0f} s)"
        if self.kind == "pause":
            return f"step {self.number}: pause {self.duration:.0f} s"
        return (
            f"step {self.number}: analysis for {self.duration:.0f} s "
            f"({self.measurements} measurement(s))"
        )


def measurements_for(duration: float, interval: float) -> int:
    """Measurements an analysis of `duration` takes, one every `interval` (at least one)."""
    return max(1, math.ceil(duration / interval - 1e-9))


def plan(steps: list[CanaryStep], analysis: Analysis) -> list[PlannedStep]:
    planned = []
    for number, step in enumerate(steps, start=1):
        if isinstance(step, SetWeightStep):
            planned.append(PlannedStep(number, "set_weight", weight=step.set_weight))
        elif isinstance(step, PauseStep):
            if step.pause.until_approved:
                planned.append(
                    PlannedStep(number, "pause", until_approved=True, timeout=step.pause.timeout)
                )
            else:
                planned.append(PlannedStep(number, "pause", duration=step.pause.duration))
        elif isinstance(step, AnalysisStep):
            duration = step.analysis.duration
            planned.append(
                PlannedStep(
                    number,
                    "analysis",
                    duration=duration,
                    measurements=measurements_for(duration, analysis.interval),
                )
            )
        elif isinstance(step, PreRolloutStep):
            planned.append(PlannedStep(number, "pre_rollout", hook=step.pre_rollout))
        elif isinstance(step, ConfirmRolloutStep):
            spec = step.confirm_rollout
            planned.append(
                PlannedStep(number, "confirm_rollout", confirm=spec, timeout=spec.timeout)
            )
        elif isinstance(step, ConfirmPromotionStep):
            spec = step.confirm_promotion
            planned.append(
                PlannedStep(number, "confirm_promotion", confirm=spec, timeout=spec.timeout)
            )
        elif isinstance(step, LoadTestStep):
            planned.append(PlannedStep(number, "load_test", load=step.load_test))
        elif isinstance(step, PostRolloutStep):
            planned.append(PlannedStep(number, "post_rollout", post=step.post_rollout))
    return planned


def post_rollout_of(planned: list[PlannedStep]) -> PostRolloutSpec | None:
    """The post-rollout hook, if the policy ends with one."""
    return planned[-1].post if planned and planned[-1].post is not None else None


def check_plan(planned: list[PlannedStep], environment: str) -> None:
    """A canary needs weights that reach 100 and at least one analysis or gate before that."""
    weights = [step.weight for step in planned if step.kind == "set_weight"]
    if not weights:
        raise ValueError(
            f"environment {environment!r}: release.steps has no set_weight step; a canary needs "
            "steps like [{set_weight: 10}, {analysis: {duration: 2m}}, {set_weight: 100}]"
        )
    checks = [step for step in planned if step.kind == "analysis" or step.is_gate]
    if not checks:
        raise ValueError(
            f"environment {environment!r}: release.steps has no analysis and no approval; a "
            "canary that nothing judges is a slow rolling deploy: add an analysis step"
        )


def progress_percent(done_steps: int, total_steps: int) -> float:
    """Progress of the canary: its steps, then promotion as the last share."""
    return round(100 * done_steps / (total_steps + 1), 1)


# --- walking the steps (the rollout state machine) ----------------------------------------------


class NoStableReleaseError(Exception):
    pass


def check_baseline(environment: str, version: str, stable_version: str | None) -> str:
    """The stable release the canary of `version` is compared with: there must be one, not it."""
    if stable_version is None:
        raise NoStableReleaseError(
            f"{environment} serves no stable release: a canary needs one to compare with; "
            f"deploy one first (deploy env={environment})"
        )
    if stable_version == version:
        raise ValueError(f"{version} already serves {environment}: nothing to release")
    return stable_version


@dataclass(frozen=True)
class StepRow:
    """What a step (or one of its measurements) did, at which weight; `step` None: the promotion."""

    step: PlannedStep | None
    weight: int
    verdict: str
    why: str
    measurement: Measurement | None = None


class Rollout(Protocol):
    """What walking the steps does to the world; the canary flow does it."""

    def progress(self, done_steps: int, what: str) -> None:
        """The walk is at `what`, `done_steps` steps behind it."""

    def set_weight(self, weight: int) -> None:
        """Send `weight`% of the requests to the canary."""

    def approval(self, step: PlannedStep, weight: int) -> tuple[bool, str]:
        """A person's answer at a gate (approved, why); none within the step's timeout is a no."""

    def pause(self, seconds: float) -> None:
        """Wait `seconds` at the current weight."""

    def measurements(self, step: PlannedStep) -> Iterator[Measurement]:
        """Both tracks measured at the end of each analysis interval, for as long as asked."""

    def row(self, row: StepRow) -> None:
        """One more row of the step table a person follows."""

    def log(self, message: str) -> None:
        """A line of the run's log."""

    def reached(self, done_steps: int, weight: int) -> None:
        """The walk starts steps[done_steps] at `weight`: stored with the canary, so a run that
        finds it after this one died knows where it stood."""

    def request(self) -> ControlRequest | None:
        """A promote-now or abort-now request someone left for this canary, if any."""

    def pre_rollout(self, step: PlannedStep) -> tuple[bool, str]:
        """Run the step's tests against the canary's own address: (passed, what they said)."""

    def confirm(self, step: PlannedStep) -> tuple[bool, str]:
        """Ask the step's URL until it says yes or no; none in its timeout is a no."""

    def start_load(self, step: PlannedStep) -> None:
        """Start the step's bounded synthetic traffic; it stops by itself or when the walk ends."""


@dataclass
class Walk:
    """Where the walk ended: every step passed, or the step that aborted it and why; `request`
    when someone's promote-now or abort-now ended it."""

    promote: bool = False
    reason: str = ""
    weight: int = 0
    step: PlannedStep | None = None
    measurements: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    request: ControlRequest | None = None


def weight_before(steps: list[PlannedStep], done_steps: int) -> int:
    """The canary's weight once the first `done_steps` steps are done."""
    weights = [step.weight for step in steps[:done_steps] if step.weight is not None]
    return weights[-1] if weights else 0


def _obey(request: ControlRequest, step: PlannedStep | None, rollout: Rollout, walk: Walk) -> Walk:
    """End the walk as someone asked: promote fully (Argo's `promote --full`) or abort now."""
    walk.request = request
    walk.promote = request.action == "promote"
    walk.reason = request.said
    rollout.row(
        StepRow(step, walk.weight, f"{request.action} now", f"by {request.by}: {request.reason}")
    )
    rollout.log(f"canary: {request.said}")
    return walk


def walk_steps(
    steps: list[PlannedStep],
    analysis: Analysis,
    version: str,
    rollout: Rollout,
    resume_at: int = 0,
    ab_mode: bool = False,
) -> Walk:
    """Walk the steps in order: the first refused gate or aborted analysis ends the walk, which
    promotes only once every step passed; a promote-now or abort-now request, looked at before
    each step and each measurement, ends it at once. `resume_at` > 0 resumes a walk an earlier
    run left there: its steps count as done and the weight they reached is set again. `ab_mode`:
    the weight steps send users nothing (release.traffic.mode ab), and their rows say so."""
    walk = Walk()
    tally = AnalysisTally(analysis)
    if resume_at:
        walk.weight = weight_before(steps, resume_at)
        walk.step = steps[resume_at - 1]
        if walk.weight:
            rollout.set_weight(walk.weight)
        rollout.row(
            StepRow(
                walk.step, walk.weight, "resumed", f"steps 1-{resume_at} done by an earlier run"
            )
        )
        for done_step in steps[:resume_at]:
            if done_step.kind == "load_test":  # its traffic died with the earlier run
                rollout.start_load(done_step)
    for done, step in enumerate(steps):
        if done < resume_at:
            continue
        request = rollout.request()
        if request is not None:
            return _obey(request, walk.step, rollout, walk)
        walk.step = step
        rollout.reached(done, walk.weight)
        rollout.progress(done, step.title)
        if step.kind == "set_weight":
            assert step.weight is not None
            rollout.set_weight(step.weight)
            walk.weight = step.weight
            share = (
                f"weight {step.weight}% (mode ab: users stay on stable, only header/cookie "
                f"requests reach {version})"
                if ab_mode
                else f"{step.weight}% of API requests to {version}"
            )
            rollout.row(StepRow(step, step.weight, "done", share))
        elif step.is_gate:
            if step.confirm is not None and step.confirm.url:
                approved, why = rollout.confirm(step)
            else:
                approved, why = rollout.approval(step, walk.weight)
            rollout.row(StepRow(step, walk.weight, "approved" if approved else "refused", why))
            request = rollout.request()  # asked at the gate: it answered it, the request decides
            if request is not None:
                return _obey(request, step, rollout, walk)
            if not approved:
                gate = "manual gate" if step.kind == "pause" else step.kind.replace("_", " ")
                walk.reason = f"{gate}: {why}"
                return walk
        elif step.kind == "pre_rollout":
            passed, why = rollout.pre_rollout(step)
            rollout.row(StepRow(step, walk.weight, "passed" if passed else "failed", why))
            if not passed:
                walk.reason = f"pre-rollout tests failed: {why}"
                return walk
        elif step.kind == "load_test":
            assert step.load is not None
            rollout.start_load(step)
            rollout.row(
                StepRow(
                    step,
                    walk.weight,
                    "started",
                    f"{step.load.rate:g} req/s to each track on {', '.join(step.load.paths)}",
                )
            )
        elif step.kind == "post_rollout":
            continue  # the flow runs it once the canary ended, promoted or aborted
        elif step.kind == "pause":
            assert step.duration is not None
            rollout.pause(step.duration)
            request = rollout.request()  # a pause ends early for a request
            if request is not None:
                return _obey(request, step, rollout, walk)
            rollout.row(StepRow(step, walk.weight, "done", f"paused {step.duration:.0f} s"))
        else:
            outcome = _analyse(step, tally, rollout, walk)
            if isinstance(outcome, ControlRequest):
                return _obey(outcome, step, rollout, walk)
            if outcome is not None:
                walk.reason = outcome
                return walk
    request = rollout.request()
    if request is not None:
        return _obey(request, walk.step, rollout, walk)
    rollout.reached(len(steps), walk.weight)
    walk.promote = True
    walk.step = None
    walk.reason = f"all {len(steps)} steps passed"
    return walk


def _analyse(
    step: PlannedStep, tally: AnalysisTally, rollout: Rollout, walk: Walk
) -> str | ControlRequest | None:
    """Judge each measurement until the step passes (None), the policy says abort (why) or
    someone asks to promote or abort now (their request)."""
    for taken, measurement in enumerate(rollout.measurements(step), start=1):
        request = rollout.request()
        if request is not None:
            return request
        verdict = judge(measurement, tally.analysis)
        decision = tally.observe(verdict, duration_elapsed=taken >= step.measurements)
        walk.measurements += 1
        walk.verdicts[verdict.outcome] = walk.verdicts.get(verdict.outcome, 0) + 1
        held = decision is Decision.MEASURE_AGAIN and taken >= step.measurements
        label = verdict.outcome + (" (holding)" if held else "")
        rollout.row(StepRow(step, walk.weight, label, verdict.why, measurement))
        rollout.log(
            f"{step.title}, measurement {taken}/{step.measurements}: {label}: {verdict.why}"
        )
        if decision is Decision.ABORT:
            return tally.abort_reason
        if decision is Decision.STEP_PASSED:
            return None
    raise RuntimeError(f"{step.title}: the measurements ended before the step was judged")


# --- a canary another run left in flight ---------------------------------------------------------


@dataclass(frozen=True)
class Interrupted:
    """What a run does first about a canary a dead run left in flight, and why."""

    action: Literal["abort", "resume"]
    record: CanaryRecord
    why: str


def interrupted_canary(
    record: CanaryRecord | None,
    own_run_id: str | None,
    version: str,
    on_interrupted: Literal["abort", "resume"],
    total_steps: int,
) -> Interrupted | None:
    """A run holding the environment's slot that finds another run's canary record: that run
    died (SIGKILL, lost worker: no hook ran). Its abort is finished, or, when the policy says
    `resume` and this run releases the same version, its walk resumes at its stored step."""
    if record is None or (own_run_id is not None and record.flow_run_id == own_run_id):
        return None
    left = (
        f"canary {record.version} left {record.status} at {record.weight}% after step "
        f"{record.step} by run {record.flow_run_id or 'unknown'}"
    )
    if record.status == "aborting":
        return Interrupted("abort", record, f"{left}: finishing its abort")
    if on_interrupted == "resume":
        if record.version == version and record.step <= total_steps:
            return Interrupted("resume", record, f"{left}: resuming it (on_interrupted: resume)")
        why = (
            f"this run releases {version}"
            if record.version != version
            else f"the policy has {total_steps} steps"
        )
        return Interrupted("abort", record, f"{left}: aborting it, not resumable ({why})")
    return Interrupted("abort", record, f"{left}: aborting it (on_interrupted: abort)")
