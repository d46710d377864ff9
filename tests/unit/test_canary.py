"""The canary judgement (measurements -> verdict with reasons) and the step state machine."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socialnet_ops.core.canary import (
    LATENCY_FLOOR_SECONDS,
    AnalysisTally,
    Decision,
    Measurement,
    TrackSample,
    Verdict,
    check_plan,
    judge,
    measurements_for,
    normal_sf,
    plan,
    progress_percent,
    two_proportion_z_test,
)
from socialnet_ops.core.environments import Analysis, ReleasePolicy

pytestmark = pytest.mark.unit

POLICY = Analysis(
    interval=10,
    min_requests=50,
    max_error_ratio=0.05,
    significance=0.05,
    max_latency_ratio=1.5,
    latency_quantile="p95",
    failure_limit=0,
    inconclusive_limit=2,
)


def track(
    requests: float, errors: float = 0, p95: float | None = 0.150, p99: float | None = 0.250
) -> TrackSample:
    return TrackSample(requests=requests, errors=errors, p95=p95, p99=p99)


def measured(canary: TrackSample | None, stable: TrackSample | None = None) -> Measurement:
    return Measurement(canary=canary, stable=stable or track(400), window_seconds=10)


# --- statistics ----------------------------------------------------------------------------------


def test_normal_tail_matches_known_values() -> None:
    assert normal_sf(0) == pytest.approx(0.5)
    assert normal_sf(1.6448536) == pytest.approx(0.05, abs=1e-6)
    assert normal_sf(-1.959964) == pytest.approx(0.975, abs=1e-6)


def test_two_proportion_z_test_matches_a_worked_example() -> None:
    # 50/100 against 40/100: pooled 0.45, z = 0.1 / sqrt(0.45 * 0.55 * 0.02) = 1.4213.
    z, p = two_proportion_z_test(50, 100, 40, 100)
    assert z == pytest.approx(1.4213, abs=1e-4)
    assert p == pytest.approx(0.0776, abs=1e-4)


def test_two_proportion_z_test_without_variance_tells_nothing_apart() -> None:
    assert two_proportion_z_test(0, 100, 0, 400) == (0.0, 1.0)
    assert two_proportion_z_test(100, 100, 400, 400) == (0.0, 1.0)


def test_two_proportion_z_test_needs_both_samples() -> None:
    with pytest.raises(ValueError, match="at least one request"):
        two_proportion_z_test(0, 0, 1, 10)


@given(
    canary_total=st.integers(1, 10_000),
    stable_total=st.integers(1, 10_000),
    canary_share=st.floats(0, 1),
    stable_share=st.floats(0, 1),
)
def test_the_p_value_is_a_probability_and_falls_as_the_canary_gets_worse(
    canary_total: int, stable_total: int, canary_share: float, stable_share: float
) -> None:
    canary_errors = round(canary_total * canary_share)
    stable_errors = round(stable_total * stable_share)
    _, p = two_proportion_z_test(canary_errors, canary_total, stable_errors, stable_total)
    assert 0 <= p <= 1
    # Monotone while there is variance (both tracks all-failing is the degenerate p = 1 case).
    if (
        canary_errors < canary_total
        and canary_errors + 1 + stable_errors < canary_total + stable_total
    ):
        _, worse = two_proportion_z_test(
            canary_errors + 1, canary_total, stable_errors, stable_total
        )
        assert worse <= p + 1e-12


# --- the judgement -------------------------------------------------------------------------------


def test_a_canary_like_stable_passes_with_reasons_a_person_reads() -> None:
    verdict = judge(measured(track(120, errors=1), track(480, errors=3)), POLICY)
    assert verdict.outcome == "pass"
    assert "error ratio 0.8% (1/120) vs stable 0.6% (3/480)" in verdict.why
    assert "p95 150 ms vs stable 150 ms: 1.00x (limit 1.5x)" in verdict.why


def test_a_canary_failing_30_percent_fails_on_both_error_rules() -> None:
    verdict = judge(measured(track(60, errors=18), track(240, errors=0)), POLICY)
    assert verdict.outcome == "fail"
    assert any("above the policy's 5.0%" in reason for reason in verdict.reasons)
    assert any("significantly worse" in reason for reason in verdict.reasons)
    assert verdict.p_value is not None and verdict.p_value < 1e-6


def test_a_canary_significantly_worse_than_stable_fails_below_the_ceiling() -> None:
    # 4 % is under the 5 % ceiling, but stable answers 0.1 %: the comparison catches it.
    verdict = judge(measured(track(2000, errors=80), track(8000, errors=8)), POLICY)
    assert verdict.outcome == "fail"
    assert len(verdict.reasons) == 1
    assert "significantly worse" in verdict.why


def test_a_difference_that_is_not_significant_passes() -> None:
    # 2 errors in 60 against 4 in 240: the canary looks worse, but chance explains it.
    verdict = judge(measured(track(60, errors=2), track(240, errors=4)), POLICY)
    assert verdict.outcome == "pass", verdict.why
    assert verdict.p_value is not None and verdict.p_value > POLICY.significance


def test_a_significant_but_negligible_difference_is_not_a_failure() -> None:
    # Millions of requests make 0.10 % against 0.05 % significant; it is below the tolerance.
    verdict = judge(measured(track(2e6, errors=2000), track(8e6, errors=4000)), POLICY)
    assert verdict.p_value is not None and verdict.p_value < 1e-6
    assert verdict.outcome == "pass", verdict.why


def test_added_latency_fails_on_the_latency_ratio() -> None:
    slow = track(60, p95=0.48, p99=0.5)
    verdict = judge(measured(slow, track(240, p95=0.12, p99=0.2)), POLICY)
    assert verdict.outcome == "fail"
    assert "p95 480 ms vs stable 120 ms: 4.00x, above the policy's 1.5x" in verdict.why


def test_tiny_latencies_are_compared_against_the_floor_not_as_a_ratio() -> None:
    # 4 ms against 2 ms is twice as slow and nobody notices: the stable value is floored.
    verdict = judge(measured(track(60, p95=0.004), track(240, p95=0.002)), POLICY)
    assert verdict.outcome == "pass", verdict.why
    assert f"floored to {LATENCY_FLOOR_SECONDS * 1000:.0f} ms" in verdict.why
    slow = judge(measured(track(60, p95=0.2), track(240, p95=0.002)), POLICY)
    assert judge(measured(track(60, p95=0.14), track(240, p95=0.002)), POLICY).outcome == "pass"
    assert slow.outcome == "fail"


def test_the_policy_chooses_the_latency_quantile() -> None:
    p99_policy = POLICY.model_copy(update={"latency_quantile": "p99"})
    canary = track(60, p95=0.15, p99=0.9)  # the tail only
    stable = track(240, p95=0.15, p99=0.2)
    assert judge(measured(canary, stable), POLICY).outcome == "pass"
    assert judge(measured(canary, stable), p99_policy).outcome == "fail"


def test_an_infinite_quantile_fails() -> None:
    # histogram_quantile answers +Inf when the quantile lies beyond the largest bucket.
    verdict = judge(measured(track(60, p95=math.inf), track(240)), POLICY)
    assert verdict.outcome == "fail"
    assert "p95 inf" in verdict.why


def test_too_few_canary_requests_are_inconclusive_however_bad_they_look() -> None:
    verdict = judge(measured(track(49, errors=49)), POLICY)
    assert verdict.outcome == "inconclusive"
    assert verdict.why == "49 canary requests in 10 s, fewer than the 50 the policy needs to judge"


def test_no_data_and_unreachable_prometheus_are_inconclusive() -> None:
    assert judge(measured(None), POLICY).outcome == "inconclusive"
    assert judge(measured(track(0)), POLICY).outcome == "inconclusive"
    down = judge(Measurement.unavailable("Prometheus unreachable: ConnectError", 10), POLICY)
    assert down == Verdict(
        "inconclusive", ("no measurement: Prometheus unreachable: ConnectError",)
    )


def test_no_canary_latency_is_inconclusive_unless_errors_already_fail() -> None:
    assert judge(measured(track(60, p95=None)), POLICY).outcome == "inconclusive"
    assert judge(measured(track(60, errors=30, p95=None)), POLICY).outcome == "fail"


def test_without_stable_traffic_only_the_fixed_ceiling_applies() -> None:
    alone = Measurement(canary=track(100, errors=2), stable=None, window_seconds=10)
    verdict = judge(alone, POLICY)
    assert verdict.outcome == "pass"
    assert "only the fixed ceiling applies" in verdict.why
    bad = Measurement(canary=track(100, errors=9), stable=track(0), window_seconds=10)
    assert judge(bad, POLICY).outcome == "fail"


@given(
    requests=st.integers(0, 10_000),
    errors_share=st.floats(0, 1),
    p95=st.one_of(st.none(), st.floats(0, 30)),
    stable_requests=st.integers(0, 10_000),
)
def test_the_judgement_never_passes_below_the_minimum_sample(
    requests: int, errors_share: float, p95: float | None, stable_requests: int
) -> None:
    verdict = judge(
        measured(track(requests, round(requests * errors_share), p95=p95), track(stable_requests)),
        POLICY,
    )
    assert verdict.reasons
    if requests < POLICY.min_requests:
        assert verdict.outcome == "inconclusive"
    if verdict.outcome == "pass":
        assert requests >= POLICY.min_requests
        assert round(requests * errors_share) / requests <= POLICY.max_error_ratio


# --- the state machine ---------------------------------------------------------------------------

PASS = Verdict("pass", ("fine",))
FAIL = Verdict("fail", ("bad",))
UNSURE = Verdict("inconclusive", ("no data",))


def test_a_step_passes_when_its_duration_elapsed_and_its_latest_verdict_passed() -> None:
    tally = AnalysisTally(POLICY)
    assert tally.observe(PASS, duration_elapsed=False) is Decision.MEASURE_AGAIN
    assert tally.observe(PASS, duration_elapsed=True) is Decision.STEP_PASSED


def test_a_failure_above_the_limit_aborts_at_once() -> None:
    tally = AnalysisTally(POLICY)
    assert tally.observe(FAIL, duration_elapsed=False) is Decision.ABORT
    assert tally.abort_reason == "analysis failed 1 time(s), the policy allows 0: bad"


def test_failures_within_the_limit_are_counted_across_steps() -> None:
    tally = AnalysisTally(POLICY.model_copy(update={"failure_limit": 1}))
    assert tally.observe(FAIL, duration_elapsed=True) is Decision.MEASURE_AGAIN
    assert tally.observe(PASS, duration_elapsed=True) is Decision.STEP_PASSED
    assert tally.observe(FAIL, duration_elapsed=False) is Decision.ABORT  # a later step


def test_no_data_holds_then_aborts_after_the_inconclusive_limit() -> None:
    tally = AnalysisTally(POLICY)  # inconclusive_limit 2: the third in a row aborts
    assert tally.observe(UNSURE, duration_elapsed=True) is Decision.MEASURE_AGAIN
    assert tally.observe(UNSURE, duration_elapsed=True) is Decision.MEASURE_AGAIN
    assert tally.observe(UNSURE, duration_elapsed=True) is Decision.ABORT
    assert tally.abort_reason is not None
    assert tally.abort_reason.startswith("3 inconclusive analyses in a row, the policy allows 2")


def test_a_pass_resets_the_inconclusive_run() -> None:
    tally = AnalysisTally(POLICY)
    for _ in range(5):
        assert tally.observe(UNSURE, duration_elapsed=False) is Decision.MEASURE_AGAIN
        assert tally.observe(UNSURE, duration_elapsed=False) is Decision.MEASURE_AGAIN
        assert tally.observe(PASS, duration_elapsed=False) is Decision.MEASURE_AGAIN
    assert tally.inconclusive_total == 10


@given(st.lists(st.sampled_from([PASS, FAIL, UNSURE]), max_size=40))
def test_no_sequence_of_verdicts_passes_a_step_without_a_final_pass(
    verdicts: list[Verdict],
) -> None:
    tally = AnalysisTally(POLICY)
    for verdict in verdicts:
        decision = tally.observe(verdict, duration_elapsed=True)
        if decision is Decision.STEP_PASSED:
            assert verdict is PASS
        if decision is not Decision.MEASURE_AGAIN:
            break


# --- the plan ------------------------------------------------------------------------------------


def production_like_policy() -> ReleasePolicy:
    return ReleasePolicy.model_validate(
        {
            "strategy": "canary",
            "steps": [
                {"set_weight": 10},
                {"analysis": {"duration": "2m"}},
                {"pause": {"until_approved": True, "timeout": "1h"}},
                {"set_weight": 50},
                {"pause": {"duration": "30s"}},
                {"analysis": {"duration": 45}},
                {"set_weight": 100},
            ],
            "analysis": {"interval": "30s"},
        }
    )


def test_the_plan_numbers_and_describes_every_step() -> None:
    policy = production_like_policy()
    steps = plan(policy.steps, policy.analysis)
    assert [step.title for step in steps] == [
        "step 1: set weight 10%",
        "step 2: analysis for 120 s (4 measurement(s))",
        "step 3: wait for approval (timeout 3600 s)",
        "step 4: set weight 50%",
        "step 5: pause 30 s",
        "step 6: analysis for 45 s (2 measurement(s))",
        "step 7: set weight 100%",
    ]
    check_plan(steps, "production")


def test_measurements_cover_the_duration_and_are_at_least_one() -> None:
    assert measurements_for(120, 30) == 4
    assert measurements_for(10, 30) == 1
    assert measurements_for(31, 30) == 2


def test_a_plan_nothing_judges_is_refused() -> None:
    policy = ReleasePolicy.model_validate({"steps": [{"set_weight": 50}, {"set_weight": 100}]})
    with pytest.raises(ValueError, match="no analysis and no approval"):
        check_plan(plan(policy.steps, policy.analysis), "staging")
    with pytest.raises(ValueError, match="no set_weight step"):
        check_plan([], "staging")


def test_progress_leaves_the_last_share_to_promotion() -> None:
    assert progress_percent(0, 4) == 0
    assert progress_percent(4, 4) == 80
