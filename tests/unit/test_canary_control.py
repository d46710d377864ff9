"""A canary always ends in a known state: promote-now / abort-now requests obeyed by the walk,
the step stored at each step, resuming where a dead run stood, what a run does about a canary
another run left in flight."""

from __future__ import annotations

import pytest

from socialnet_ops.core.canary import (
    PlannedStep,
    interrupted_canary,
    walk_steps,
    weight_before,
)
from socialnet_ops.core.environments import ReleasePolicy
from socialnet_ops.core.ledger import CanaryRecord, ControlRequest, Ledger
from tests.unit.test_canary import POLICY
from tests.unit.test_canary_walk import GATED, GOOD, FakeRollout

pytestmark = pytest.mark.unit

PROMOTE = ControlRequest(action="promote", by="alice", reason="hotfix, the dashboards are green")
ABORT = ControlRequest(action="abort", by="bob", reason="the sale starts")


def test_promote_now_during_an_analysis_skips_every_remaining_step() -> None:
    rollout = FakeRollout(measured=[GOOD, GOOD], requested=PROMOTE, request_after_measurements=1)
    walk = walk_steps(GATED, POLICY, "v2", rollout)
    assert walk.promote and walk.request == PROMOTE
    assert walk.reason == "promote requested by alice: hotfix, the dashboards are green"
    assert (walk.step, walk.weight, walk.measurements) == (GATED[1], 10, 1)
    assert ("approval", 10) not in rollout.calls and ("set_weight", 100) not in rollout.calls
    row = rollout.report.rows[-1]
    assert (row["step"], row["verdict"], row["why"]) == (
        GATED[1].title,
        "promote now",
        "by alice: hotfix, the dashboards are green",
    )


def test_abort_now_before_a_step_walks_no_further() -> None:
    rollout = FakeRollout(measured=[GOOD, GOOD], requested=ABORT, request_after_measurements=2)
    walk = walk_steps(GATED, POLICY, "v2", rollout)
    assert not walk.promote and walk.request == ABORT
    assert walk.reason == "abort requested by bob: the sale starts"
    assert ("approval", 10) not in rollout.calls
    assert rollout.verdicts == ["done", "pass", "pass", "abort now"]


class RequestAtTheGate(FakeRollout):
    """Someone aborts while the run waits at its gate; the gate is answered for them."""

    def approval(self, step: PlannedStep, weight: int) -> tuple[bool, str]:
        self.requested, self.request_after_measurements = ABORT, 0
        return True, "approved"


def test_a_request_made_at_a_gate_decides_after_it() -> None:
    rollout = RequestAtTheGate(measured=[GOOD, GOOD])
    walk = walk_steps(GATED, POLICY, "v2", rollout)
    assert not walk.promote and walk.step == GATED[2]
    assert rollout.verdicts[-2:] == ["approved", "abort now"]
    assert ("pause", 5) not in rollout.calls


def test_each_step_is_stored_with_the_weight_it_starts_at() -> None:
    rollout = FakeRollout(measured=[GOOD, GOOD])
    walk_steps(GATED, POLICY, "v2", rollout)
    assert rollout.stored == [(0, 0), (1, 10), (2, 10), (3, 10), (4, 10), (5, 100)]


def test_a_resumed_walk_sets_the_weight_again_and_redoes_the_step_it_stood_at() -> None:
    rollout = FakeRollout(measured=[GOOD, GOOD])
    walk = walk_steps(GATED, POLICY, "v2", rollout, resume_at=1)
    assert walk.promote
    assert rollout.calls[0] == ("set_weight", 10)
    assert ("progress", 0, GATED[0].title) not in rollout.calls
    assert rollout.verdicts[:3] == ["resumed", "pass", "pass"]
    assert rollout.report.rows[0]["why"] == "steps 1-1 done by an earlier run"
    assert rollout.stored[0] == (1, 10)


def test_a_walk_resumed_after_its_last_step_promotes() -> None:
    rollout = FakeRollout()
    walk = walk_steps(GATED, POLICY, "v2", rollout, resume_at=len(GATED))
    assert walk.promote and walk.weight == 100


def test_weight_before_a_step() -> None:
    assert [weight_before(GATED, done) for done in range(6)] == [0, 10, 10, 10, 10, 100]


RECORD = CanaryRecord(version="v2", weight=50, flow_run_id="dead", step=2)


def test_no_record_or_ones_own_is_no_interrupted_canary() -> None:
    assert interrupted_canary(None, "run", "v2", "abort", 5) is None
    assert interrupted_canary(RECORD, "dead", "v2", "resume", 5) is None


def test_a_dead_runs_canary_is_aborted_unless_the_policy_resumes_the_same_version() -> None:
    aborted = interrupted_canary(RECORD, "new", "v2", "abort", 5)
    assert aborted is not None and aborted.action == "abort"
    assert aborted.why == (
        "canary v2 left progressing at 50% after step 2 by run dead: aborting it "
        "(on_interrupted: abort)"
    )
    resumed = interrupted_canary(RECORD, "new", "v2", "resume", 5)
    assert resumed is not None and (resumed.action, resumed.record.step) == ("resume", 2)
    other = interrupted_canary(RECORD, "new", "v3", "resume", 5)
    assert other is not None and other.action == "abort"
    assert other.why.endswith("not resumable (this run releases v3)")
    shorter = interrupted_canary(RECORD, "new", "v2", "resume", 1)
    assert shorter is not None and shorter.action == "abort"


def test_an_abort_a_dead_run_began_is_always_finished() -> None:
    aborting = RECORD.model_copy(update={"status": "aborting"})
    found = interrupted_canary(aborting, "new", "v2", "resume", 5)
    assert found is not None and found.action == "abort"
    assert found.why.endswith("finishing its abort")


def test_the_policy_says_what_to_do_with_an_interrupted_canary() -> None:
    assert ReleasePolicy().on_interrupted == "abort"
    assert ReleasePolicy.model_validate({"on_interrupted": "resume"}).on_interrupted == "resume"
    with pytest.raises(ValueError, match="on_interrupted"):
        ReleasePolicy.model_validate({"on_interrupted": "ignore"})


def test_a_ledger_written_before_steps_were_stored_still_loads() -> None:
    old = {"environment": "local", "canary": {"version": "v2", "weight": 25}}
    canary = Ledger.model_validate(old).canary
    assert canary is not None and (canary.step, canary.status) == (0, "progressing")
    assert CanaryRecord.model_validate_json(RECORD.model_dump_json()) == RECORD


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["promote", "--env", "local", "--reason", "why"], "promote: only --full is supported"),
        (["abort", "--env", "local", "--reason", " "], "abort --env local: --reason is empty"),
        (["abort", "--env", "nowhere", "--reason", "why"], "nowhere"),
    ],
)
def test_promote_and_abort_refuse_a_mistake_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from socialnet_ops.control.cli import main

    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    output = capsys.readouterr().out.strip()
    assert output.startswith("error:") and message in output and "\n" not in output
