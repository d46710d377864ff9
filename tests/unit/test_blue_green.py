"""Blue-green as the canary's steps: what `release.blue_green` stands for, and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from socialnet_ops.core.canary import check_plan, plan, walk_steps
from socialnet_ops.core.environments import ReleasePolicy
from tests.unit.test_canary import POLICY
from tests.unit.test_canary_hooks import _policy_error
from tests.unit.test_canary_walk import BAD, GOOD, FakeRollout

pytestmark = pytest.mark.unit


def blue_green(**spec: Any) -> ReleasePolicy:
    return ReleasePolicy.model_validate({"strategy": "blue_green", "blue_green": spec})


def test_blue_green_is_a_preview_judged_on_its_load_test_then_one_switch() -> None:
    policy = blue_green(
        pre_promotion_analysis={"duration": "20s"},
        post_promotion_analysis={"duration": "30s"},
        scale_down_delay="45s",
        preview_load={"rate": 5},
    )
    steps = plan(policy.walked_steps, policy.analysis)
    check_plan(steps, "production")
    assert [step.title for step in steps] == [
        "step 1: load test 5 req/s per track for up to 600 s",
        "step 2: analysis for 20 s (1 measurement(s))",
        "step 3: set weight 100%",
        "step 4: analysis for 30 s (1 measurement(s))",
        "step 5: pause 45 s",
    ]
    assert policy.progressive


def test_a_preview_failing_its_analysis_never_takes_a_user() -> None:
    policy = blue_green(pre_promotion_analysis={"duration": "10s"})
    rollout = FakeRollout(measured=[BAD])
    walk = walk_steps(plan(policy.walked_steps, POLICY), POLICY, "v2", rollout)
    assert not walk.promote and walk.weight == 0
    assert not [call for call in rollout.calls if call[0] == "set_weight"]


def test_a_failed_post_promotion_analysis_switches_back_from_100() -> None:
    policy = blue_green(
        pre_promotion_analysis={"duration": "10s"}, post_promotion_analysis={"duration": "10s"}
    )
    rollout = FakeRollout(measured=[GOOD, BAD])
    walk = walk_steps(plan(policy.walked_steps, POLICY), POLICY, "v2", rollout)
    # The flow aborts a walk that did not promote: weight 0, every user back on the old release.
    assert (walk.promote, walk.weight) == (False, 100)
    assert walk.step is not None and walk.step.number == 4


def test_without_auto_promotion_someone_confirms_the_switch() -> None:
    policy = blue_green(auto_promote=False, confirm_url="https://gate.example.org/switch")
    steps = plan(policy.walked_steps, policy.analysis)
    assert [step.kind for step in steps][:4] == [
        "load_test",
        "analysis",
        "confirm_promotion",
        "set_weight",
    ]
    assert (
        steps[2].confirm is not None and steps[2].confirm.url == "https://gate.example.org/switch"
    )


@pytest.mark.parametrize(
    ("release", "expected"),
    [
        (
            {"strategy": "blue_green", "steps": [{"set_weight": 100}]},
            "steps: blue_green walks the steps release.blue_green stands for; remove steps",
        ),
        (
            {"strategy": "canary", "steps": [{"set_weight": 100}], "blue_green": {}},
            "blue_green: set strategy: blue_green to use it",
        ),
        (
            {"strategy": "blue_green", "blue_green": {"scale_down_delay": "soon"}},
            "release.blue_green.scale_down_delay",
        ),
    ],
)
def test_a_confused_blue_green_policy_is_one_line(release: dict[str, Any], expected: str) -> None:
    assert expected in _policy_error(release)
