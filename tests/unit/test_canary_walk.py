"""Walking the canary's steps (which step next, when to abort or promote) and its step table."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socialnet_ops.core.canary import (
    Measurement,
    NoStableReleaseError,
    PlannedStep,
    StepRow,
    check_baseline,
    plan,
    walk_steps,
)
from socialnet_ops.core.canary_report import CanaryReport
from socialnet_ops.core.environments import ReleasePolicy
from socialnet_ops.core.ledger import ControlRequest
from tests.unit.test_canary import POLICY, measured, track

pytestmark = pytest.mark.unit

GOOD = measured(track(400))
BAD = measured(track(400, errors=120))
NO_DATA = Measurement.unavailable("Prometheus did not answer", window_seconds=10)


@dataclass
class FakeRollout:
    """Does nothing but note what the walk asked for; measurements come from a list."""

    measured: list[Measurement] = field(default_factory=list)
    approve: tuple[bool, str] = (True, "approved")
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    report: CanaryReport = field(default_factory=lambda: CanaryReport("staging", "v2", []))
    # A promote/abort request someone leaves once this many measurements were judged.
    requested: ControlRequest | None = None
    request_after_measurements: int = 0
    stored: list[tuple[int, int]] = field(default_factory=list)  # (steps done, weight)
    tests_pass: tuple[bool, str] = (True, "pytest exited 0: 3 passed")

    def reached(self, done_steps: int, weight: int) -> None:
        self.stored.append((done_steps, weight))

    def request(self) -> ControlRequest | None:
        judged = sum(1 for call in self.calls if call[0] == "log")
        return self.requested if judged >= self.request_after_measurements else None

    def progress(self, done_steps: int, what: str) -> None:
        self.calls.append(("progress", done_steps, what))

    def set_weight(self, weight: int) -> None:
        self.calls.append(("set_weight", weight))

    def approval(self, step: PlannedStep, weight: int) -> tuple[bool, str]:
        self.calls.append(("approval", weight))
        return self.approve

    def pause(self, seconds: float) -> None:
        self.calls.append(("pause", seconds))

    def pre_rollout(self, step: PlannedStep) -> tuple[bool, str]:
        self.calls.append(("pre_rollout", step.number))
        return self.tests_pass

    def confirm(self, step: PlannedStep) -> tuple[bool, str]:
        self.calls.append(("confirm", step.kind))
        return self.approve

    def start_load(self, step: PlannedStep) -> None:
        self.calls.append(("start_load", step.number))

    def measurements(self, step: PlannedStep) -> Iterator[Measurement]:
        while self.measured:
            self.calls.append(("measure", step.number))
            yield self.measured.pop(0)

    def row(self, row: StepRow) -> None:
        self.report.add(row)

    def log(self, message: str) -> None:
        self.calls.append(("log", message))

    @property
    def verdicts(self) -> list[str]:
        return [row["verdict"] for row in self.report.rows]


def steps(*policy_steps: dict[str, Any]) -> list[PlannedStep]:
    policy = ReleasePolicy.model_validate(
        {"steps": list(policy_steps), "analysis": {"interval": 10}}
    )
    return plan(policy.steps, policy.analysis)


GATED = steps(
    {"set_weight": 10},
    {"analysis": {"duration": 20}},
    {"pause": {"until_approved": True, "timeout": 60}},
    {"pause": {"duration": 5}},
    {"set_weight": 100},
)


def test_every_step_passed_promotes() -> None:
    rollout = FakeRollout(measured=[GOOD, GOOD])
    walk = walk_steps(GATED, POLICY, "v2", rollout)
    assert (walk.promote, walk.reason, walk.step) == (True, "all 5 steps passed", None)
    assert (walk.weight, walk.measurements, walk.verdicts) == (100, 2, {"pass": 2})
    assert [call for call in rollout.calls if call[0] != "log"] == [
        ("progress", 0, "step 1: set weight 10%"),
        ("set_weight", 10),
        ("progress", 1, "step 2: analysis for 20 s (2 measurement(s))"),
        ("measure", 2),
        ("measure", 2),
        ("progress", 2, "step 3: wait for approval (timeout 60 s)"),
        ("approval", 10),
        ("progress", 3, "step 4: pause 5 s"),
        ("pause", 5),
        ("progress", 4, "step 5: set weight 100%"),
        ("set_weight", 100),
    ]
    assert rollout.verdicts == ["done", "pass", "pass", "approved", "done", "done"]
    assert rollout.report.rows[0]["why"] == "10% of API requests to v2"
    assert rollout.report.rows[4]["why"] == "paused 5 s"


def test_a_refused_gate_aborts_at_its_weight_and_walks_no_further() -> None:
    rollout = FakeRollout(measured=[GOOD, GOOD], approve=(False, "no answer within 60 s"))
    walk = walk_steps(GATED, POLICY, "v2", rollout)
    assert not walk.promote
    assert walk.reason == "manual gate: no answer within 60 s"
    assert (walk.step, walk.weight) == (GATED[2], 10)
    assert rollout.verdicts[-1] == "refused"
    assert ("pause", 5) not in rollout.calls


def test_a_failed_analysis_aborts_with_the_policys_reason() -> None:
    rollout = FakeRollout(measured=[GOOD, BAD, GOOD])
    walk = walk_steps(GATED, POLICY, "v2", rollout)
    assert not walk.promote
    assert walk.reason.startswith("analysis failed 1 time(s), the policy allows 0: ")
    assert (walk.step, walk.measurements, walk.verdicts) == (GATED[1], 2, {"pass": 1, "fail": 1})
    assert rollout.measured == [GOOD]  # no measurement after the abort
    assert ("approval", 10) not in rollout.calls


def test_an_inconclusive_verdict_holds_the_step_past_its_duration() -> None:
    rollout = FakeRollout(measured=[GOOD, NO_DATA, GOOD])
    walk = walk_steps(GATED, POLICY, "v2", rollout)
    assert walk.promote
    assert rollout.verdicts[1:4] == ["pass", "inconclusive (holding)", "pass"]
    held = "inconclusive (holding): no measurement: Prometheus did not answer"
    assert ("log", f"{GATED[1].title}, measurement 2/2: {held}") in rollout.calls


def test_no_data_never_promotes() -> None:
    rollout = FakeRollout(measured=[NO_DATA] * 10)
    walk = walk_steps(GATED, POLICY, "v2", rollout)  # inconclusive_limit 2: the third aborts
    assert not walk.promote
    assert walk.reason.startswith("3 inconclusive analyses in a row, the policy allows 2")
    assert walk.verdicts == {"inconclusive": 3}


@given(st.lists(st.sampled_from([GOOD, BAD, NO_DATA]), min_size=5, max_size=5))
def test_an_analysis_passes_only_on_a_pass_and_an_abort_walks_no_further(
    measurements: list[Measurement],
) -> None:
    rollout = FakeRollout(measured=[*measurements, GOOD, GOOD])  # the last ones: to finish
    walk = walk_steps(GATED, POLICY, "v2", rollout)
    analysed = [row["verdict"] for row in rollout.report.rows if row["step"] == GATED[1].title]
    if walk.promote:
        assert analysed[-1] == "pass"
        assert rollout.report.rows[-1]["step"] == GATED[-1].title
    else:
        assert walk.step == GATED[1]
        assert rollout.report.rows[-1]["step"] == GATED[1].title


def test_measurements_that_end_before_the_judgement_are_an_error() -> None:
    with pytest.raises(RuntimeError, match="measurements ended before the step was judged"):
        walk_steps(GATED, POLICY, "v2", FakeRollout(measured=[GOOD]))


def test_a_canary_needs_a_stable_release_other_than_itself() -> None:
    assert check_baseline("staging", "v2", "v1") == "v1"
    with pytest.raises(NoStableReleaseError, match="deploy one first"):
        check_baseline("staging", "v2", None)
    with pytest.raises(ValueError, match="v2 already serves staging: nothing to release"):
        check_baseline("staging", "v2", "v2")


def test_the_table_shows_both_tracks_and_dashes_for_what_was_not_measured() -> None:
    report = CanaryReport("staging", "v2", GATED)
    report.add(StepRow(GATED[0], 10, "done", "10% of API requests to v2"))
    rows = report.add(StepRow(GATED[1], 10, "pass", "fine", measured(track(60, errors=3, p95=0.2))))
    assert rows[0]["canary requests"] == rows[0]["canary p95"] == "-"
    assert {key: rows[1][key] for key in ("canary requests", "canary errors", "canary p95")} == {
        "canary requests": "60",
        "canary errors": "5.00%",
        "canary p95": "200 ms",
    }
    assert report.add(StepRow(None, 100, "promoted", "v2 replaced v1"))[-1]["step"] == "promotion"


def test_the_progress_bar_leaves_the_last_share_to_promotion() -> None:
    report = CanaryReport("staging", "v2", GATED)
    assert report.progress(5, "promoting") == (83.3, "Canary v2 on staging: promoting")
    assert report.finished("promoted") == "Canary v2: promoted"
    assert (report.table_key, report.progress_key) == ("canary-staging", "canary-progress-staging")


def test_in_ab_mode_a_weight_step_says_users_stay_on_stable() -> None:
    rollout = FakeRollout(measured=[GOOD, GOOD])
    walk_steps(GATED, POLICY, "v2", rollout, ab_mode=True)
    assert rollout.report.rows[0]["why"] == (
        "weight 10% (mode ab: users stay on stable, only header/cookie requests reach v2)"
    )
