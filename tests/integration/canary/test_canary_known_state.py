"""Drills: a canary always ends in a known state (weight 0 and stopped, or promoted).

- cancelled from the API at 50 %, the run served by a Prefect runner (as a worker runs it): the
  cancellation hook aborts the canary;
- its process SIGKILLed at 50 % (no hook runs): the step stays stored with the canary, and the
  next run of the environment first aborts it, then is promoted now by a request;
- SIGKILLed at 50 % with `on_interrupted: resume`: the next run of the same version resumes at the
  stored step, its replicas kept, and is aborted now from another process.

Analyses are long and never judged (no traffic, a high inconclusive limit): each drill acts on the
canary while it holds 50 %.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, get_current_settings
from prefect.states import Cancelling

from flows.canary import CanaryAbortedError, canary
from flows.canary_control import canary_control
from flows.common import release_limit
from socialnet_ops.core.ledger import CanaryRecord, ControlRequest
from socialnet_ops.core.paths import repo_root
from socialnet_ops.platforms.local import LocalPlatform
from tasks.ledger import load_ledger
from tests.integration.canary.conftest import ENV, FlowInThread, canary_events, release
from tests.integration.canary.test_canary_flow import (
    assert_rolled_back,
    ledger_snapshot,
    serving,
    table_rows,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

CANCELLED = release("cancelled")
KILLED = release("killed")
NEXT = release("next")
RESUMED = release("resumed")

# 50 %, then an analysis far longer than any drill: the canary holds 50 % until acted on.
HOLD_AT_50 = [{"set_weight": 50}, {"analysis": {"duration": "300s"}}, {"set_weight": 100}]


@pytest.fixture
def holding_policy(release_policy: Callable[..., None], catalog: Path) -> Callable[[str], None]:
    def write(on_interrupted: str = "abort") -> None:
        release_policy(HOLD_AT_50, inconclusive_limit=1000)
        path = catalog / f"{ENV}.yaml"
        document = yaml.safe_load(path.read_text())
        document["release"]["on_interrupted"] = on_interrupted
        path.write_text(yaml.safe_dump(document, sort_keys=False))

    return write


def prefect_env(**extra: str) -> dict[str, str]:
    """This process's environment with the test server's Prefect settings, for a child."""
    settings = get_current_settings().to_environment_variables(exclude_unset=True)
    return {**os.environ, **settings, "PREFECT_API_URL": str(PREFECT_API_URL.value()), **extra}


def python(code: str, **extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=repo_root(),
        env=prefect_env(**extra),
        start_new_session=True,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def held_at_50(platform: LocalPlatform, version: str) -> CanaryRecord | None:
    """The canary of `version` at 50 %, its walk in the analysis (step 2), as stored."""
    record = platform.canary_record()
    if record and (record.version, record.step, record.weight) == (version, 1, 50):
        return record if platform.status().canary_weight == 50 else None
    return None


def abort_if_left(run: FlowInThread, platform: LocalPlatform) -> None:
    """After a failed drill: a canary run still walking is asked to abort, and waited for."""
    if platform.canary_record() is not None:
        platform.request_canary(ControlRequest(action="abort", by="test", reason="cleanup"))
    run.join(timeout=300)


def repossess_dead_runs_slot() -> None:
    """On the control plane Prefect's repossessor frees a dead run's slot once its lease expires
    (60 s without renewal, then within 15 s); the test server is ephemeral and runs no such
    service, so the drill does its job."""
    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(
            release_limit(ENV), GlobalConcurrencyLimitUpdate(active_slots=0)
        )


def run_state(run_id: str) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state  # type: ignore[arg-type]


@pytest.fixture
def served_canary() -> Iterator[None]:
    """The canary flow served by a Prefect runner in another process, as a worker would run it."""
    runner = python(
        "from flows.canary import canary; canary.serve(name='drill', limit=1)",
        PREFECT_RUNNER_POLL_FREQUENCY="2",
    )
    try:
        yield
    finally:
        stop(runner)


def test_cancelling_a_canary_at_50_percent_from_the_api_aborts_it(
    canary_platform: LocalPlatform, holding_policy: Callable[..., None], served_canary: None
) -> None:
    holding_policy()
    stable, ledger_before = canary_platform.status().stable_version, ledger_snapshot()
    assert stable is not None

    def scheduled() -> Any:
        try:
            return run_deployment(
                "canary/drill", parameters={"env": ENV, "version": CANCELLED}, timeout=0
            )
        except Exception:  # the runner has not registered its deployment yet
            return None

    run = wait_for(scheduled, 60, "the served canary deployment", interval_s=2)
    record = wait_for(lambda: held_at_50(canary_platform, CANCELLED), 240, "the canary at 50 %", 1)
    assert record.flow_run_id == str(run.id)
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, Cancelling(message="drill: cancelled at 50 %"))
    wait_for(lambda: run_state(str(run.id)).is_cancelled(), 90, "the run cancelled", 1)
    wait_for(lambda: canary_platform.status().canary_version is None, 60, "the canary aborted", 1)
    assert_rolled_back(canary_platform, stable, ledger_before)
    assert canary_platform.canary_record() is None
    assert wait_for(
        lambda: "socialnet.canary.aborted" in canary_events(CANCELLED), 20, "canary.aborted"
    )


def test_a_canary_killed_at_50_percent_is_aborted_by_the_next_run_which_is_promoted_now(
    canary_platform: LocalPlatform, holding_policy: Callable[..., None]
) -> None:
    holding_policy("abort")
    killed = python(f"from flows.canary import canary; canary(env={ENV!r}, version={KILLED!r})")
    try:
        record = wait_for(lambda: held_at_50(canary_platform, KILLED), 240, "killed at 50 %", 1)
        killed.kill()  # SIGKILL: no hook runs
        killed.wait(10)
    finally:
        stop(killed)
    # The step it reached is stored with the canary, which still serves its 50 %.
    assert canary_platform.canary_record() == record and record.status == "progressing"
    assert canary_platform.status().canary_version == KILLED
    assert (KILLED, "canary") in serving(canary_platform, probes=40)

    # The next run takes the dead run's slot once it is freed, aborts its canary, walks its own.
    repossess_dead_runs_slot()
    run = FlowInThread(lambda: canary(env=ENV, version=NEXT))
    try:
        wait_for(lambda: held_at_50(canary_platform, NEXT), 300, "the next canary at 50 %", 1)
        answer = canary_control(
            env=ENV, action="promote", reason="drill: promote now", by="drill-operator"
        )
        assert (answer["version"], answer["step"], answer["weight"]) == (NEXT, 1, 50)
        run.join(timeout=240)
    finally:
        abort_if_left(run, canary_platform)
    assert run.error is None, run.error
    result = run.result
    assert result.outcome == "promoted"
    assert result.reason == "promote requested by drill-operator: drill: promote now"
    assert serving(canary_platform) == {(NEXT, "stable")}
    assert canary_platform.canary_record() is None and load_ledger(ENV).canary is None
    rows = table_rows()
    assert [(row["verdict"], row["why"]) for row in rows if row["verdict"] == "promote now"] == [
        ("promote now", "by drill-operator: drill: promote now")
    ]
    # The dead run's canary was aborted first, and the dead run says it crashed.
    assert wait_for(
        lambda: "socialnet.canary.aborted" in canary_events(KILLED), 20, "canary.aborted"
    )
    assert record.flow_run_id is not None and run_state(record.flow_run_id).is_crashed()


def canary_programs(platform: LocalPlatform) -> list[str]:
    return sorted(p.name for p in platform.status().programs if p.name.startswith("api-canary"))


def test_a_killed_canary_resumes_where_it_stood_and_is_aborted_now_from_another_process(
    canary_platform: LocalPlatform, holding_policy: Callable[..., None]
) -> None:
    holding_policy("resume")
    stable, ledger_before = canary_platform.status().stable_version, ledger_snapshot()
    assert stable is not None
    killed = python(f"from flows.canary import canary; canary(env={ENV!r}, version={RESUMED!r})")
    try:
        record = wait_for(lambda: held_at_50(canary_platform, RESUMED), 240, "killed at 50 %", 1)
        replicas = canary_programs(canary_platform)
        killed.kill()  # SIGKILL: no hook runs
        killed.wait(10)
    finally:
        stop(killed)
    repossess_dead_runs_slot()

    def resumed() -> CanaryRecord | None:
        found = held_at_50(canary_platform, RESUMED)
        return found if found and found.flow_run_id != record.flow_run_id else None

    # A new run of the same version picks the walk up at the analysis; the replicas stayed.
    run = FlowInThread(lambda: canary(env=ENV, version=RESUMED))
    try:
        wait_for(resumed, 240, "the canary resumed at 50 %", 1)
        assert canary_programs(canary_platform) == replicas
        control = python(
            "from flows.canary_control import canary_control; "
            f"canary_control(env={ENV!r}, action='abort', reason='drill: abort now', "
            "by='drill-operator')"
        )
        assert control.wait(120) == 0
        run.join(timeout=120)
    finally:
        abort_if_left(run, canary_platform)
    assert isinstance(run.error, CanaryAbortedError), run.error
    details = run.error.details
    assert details.reason == "abort requested by drill-operator: drill: abort now"
    assert (details.step, details.weight) == (2, 50)
    assert_rolled_back(canary_platform, stable, ledger_before)
    rows = table_rows()
    assert (rows[0]["verdict"], rows[0]["why"]) == ("resumed", "steps 1-1 done by an earlier run")
    assert (rows[-1]["verdict"], rows[-1]["why"]) == (
        "abort now",
        "by drill-operator: drill: abort now",
    )
    assert not [row for row in rows if row["verdict"] == "done"]  # step 1 was not walked again
