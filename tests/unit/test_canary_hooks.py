"""Flagger-style hooks as canary steps: where the policy may place them and what the walk does."""

from __future__ import annotations

import pytest

from socialnet_ops.core.canary import post_rollout_of, walk_steps
from socialnet_ops.core.environments import EnvironmentError, parse_environment
from tests.unit.test_canary import POLICY
from tests.unit.test_canary_walk import GOOD, FakeRollout, steps

pytestmark = pytest.mark.unit

HOOKED = steps(
    {"pre_rollout": {"command": ["pytest", "tests/smoke"]}},
    {"set_weight": 10},
    {"load_test": {"rate": 5, "duration": "5m"}},
    {"analysis": {"duration": 10}},
    {"confirm_promotion": {"url": "http://127.0.0.1:9/ok", "timeout": "10m"}},
    {"set_weight": 100},
    {"post_rollout": {"url": "http://127.0.0.1:9/done"}},
)


def test_hooks_run_in_their_place_and_post_rollout_is_left_to_the_end() -> None:
    rollout = FakeRollout(measured=[GOOD])
    walk = walk_steps(HOOKED, POLICY, "v2", rollout)
    assert (walk.promote, walk.weight) == (True, 100)
    assert [call for call in rollout.calls if call[0] not in {"log", "progress"}] == [
        ("pre_rollout", 1),
        ("set_weight", 10),
        ("start_load", 3),
        ("measure", 4),
        ("confirm", "confirm_promotion"),
        ("set_weight", 100),
    ]
    assert rollout.verdicts == ["passed", "done", "started", "pass", "approved", "done"]
    assert HOOKED[0].title == "step 1: pre-rollout tests against the canary (pytest tests/smoke)"
    assert HOOKED[2].title == "step 3: load test 5 req/s per track for up to 300 s"
    assert HOOKED[4].title == ("step 5: confirm promotion (http://127.0.0.1:9/ok, timeout 600 s)")
    post = post_rollout_of(HOOKED)
    assert post is not None and post.url == "http://127.0.0.1:9/done"


def test_failed_pre_rollout_tests_abort_before_any_user_traffic() -> None:
    rollout = FakeRollout(tests_pass=(False, "pytest exited 1: 1 failed"))
    walk = walk_steps(HOOKED, POLICY, "v2", rollout)
    assert not walk.promote
    assert walk.reason == "pre-rollout tests failed: pytest exited 1: 1 failed"
    assert (walk.weight, walk.step) == (0, HOOKED[0])
    assert not [call for call in rollout.calls if call[0] == "set_weight"]


def test_a_refused_confirmation_aborts_before_promotion() -> None:
    rollout = FakeRollout(measured=[GOOD], approve=(False, "refused: answered 409"))
    walk = walk_steps(HOOKED, POLICY, "v2", rollout)
    assert not walk.promote
    assert walk.reason == "confirm promotion: refused: answered 409"
    assert ("set_weight", 100) not in rollout.calls


def test_a_confirmation_without_url_is_asked_in_the_prefect_ui() -> None:
    planned = steps(
        {"confirm_rollout": {"timeout": 60}},
        {"set_weight": 100},
    )
    rollout = FakeRollout()
    assert walk_steps(planned, POLICY, "v2", rollout).promote
    assert ("approval", 0) in rollout.calls
    assert planned[0].title == "step 1: confirm rollout (approval in the Prefect UI, timeout 60 s)"


def test_a_resumed_walk_restarts_its_load_test() -> None:
    rollout = FakeRollout(measured=[GOOD])
    walk_steps(HOOKED, POLICY, "v2", rollout, resume_at=3)
    assert ("start_load", 3) in rollout.calls
    assert ("pre_rollout", 1) not in rollout.calls


def _policy_error(release_steps: list[object] | dict[str, object]) -> str:
    """The one-line error of an environment whose release is `release_steps` (a canary's steps,
    or a whole release policy)."""
    release = (
        release_steps
        if isinstance(release_steps, dict)
        else {"strategy": "canary", "steps": release_steps}
    )
    document = {
        "name": "staging",
        "platform": {"kind": "local"},
        "domain": "example.org",
        "dns_zone": "example.org",
        "terraform": {"stack": "s", "backend": {"bucket": "b", "key": "k"}},
        "ansible": {"source": "static"},
        "vault": {"address": "http://127.0.0.1:8200", "auth": {"role": "r"}},
        "release": release,
    }
    with pytest.raises(EnvironmentError) as raised:
        parse_environment(document, "staging.yaml")
    message = str(raised.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("release_steps", "expected"),
    [
        (
            [{"set_weight": 10}, {"pre_rollout": {"command": ["true"]}}, {"set_weight": 100}],
            "steps[1].pre_rollout: it guards user traffic, so it comes before the first "
            "set_weight above 0 (steps[0])",
        ),
        (
            [{"post_rollout": {}}, {"set_weight": 100}],
            "steps[0].post_rollout: it runs once the canary ended, so it is the last step",
        ),
        (
            [{"load_test": {}}, {"load_test": {}}, {"set_weight": 100}],
            "one load_test at most",
        ),
        (
            [{"pre_rollout": {"command": ["true"], "url": "http://x/y"}}, {"set_weight": 100}],
            "a hook is either a command (a list of words) or a url",
        ),
        ([{"load_test": {"rate": 1000}}, {"set_weight": 100}], "release.steps[0].load_test.rate"),
        ([{"smoke": {}}, {"set_weight": 100}], "a step is one key of set_weight, pause, analysis"),
    ],
)
def test_misplaced_or_malformed_hooks_are_one_line_naming_the_step(
    release_steps: list[object], expected: str
) -> None:
    message = _policy_error(release_steps)
    assert "staging.yaml" in message
    assert expected in message
