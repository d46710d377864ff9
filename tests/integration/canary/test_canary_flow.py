"""The canary flow on real replicas behind HAProxy, judged from a real Prometheus.

Every test releases a new build over the stable one and checks what users saw, what serves
afterwards, the ledger, the artifacts and the events. Steps are short (5 s analysis interval).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.flow_runs import resume_flow_run

from flows.canary import CanaryAbortedError, canary
from socialnet_ops.platforms.local import LocalPlatform
from tasks.ledger import load_ledger
from tests.integration.canary.conftest import (
    ENV,
    FlowInThread,
    canary_events,
    paused_canary_run,
    release,
)
from tests.integration.canary.traffic import UserTraffic, canary_share
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

GOOD = release("good")
ERRORS = release("errors")
SLOW = release("slow")
QUIET = release("quiet")
GATED = release("gated")
UNANSWERED = release("unanswered")
BLIND = release("blind")

TWO_ANALYSES = [
    {"set_weight": 25},
    {"analysis": {"duration": "10s"}},
    {"set_weight": 50},
    {"analysis": {"duration": "10s"}},
    {"set_weight": 100},
]
ONE_ANALYSIS = [{"set_weight": 25}, {"analysis": {"duration": "10s"}}, {"set_weight": 100}]


def serving(platform: LocalPlatform, probes: int = 20) -> set[tuple[str, str]]:
    with httpx.Client(base_url=platform.endpoints().edge_url, timeout=5) as client:
        bodies = [client.get("/version").json() for _ in range(probes)]
    return {(body["version"], body["track"]) for body in bodies}


def stable_of(platform: LocalPlatform) -> str:
    version = platform.status().stable_version
    assert version is not None
    return version


def assert_rolled_back(platform: LocalPlatform, stable: str, ledger_before: object) -> None:
    """Weight 0, no canary replica, stable untouched, ledger as before."""
    status = platform.status()
    assert (status.stable_version, status.canary_version, status.canary_weight) == (stable, None, 0)
    assert not [p.name for p in status.programs if p.name.startswith("api-canary")]
    assert serving(platform) == {(stable, "stable")}
    ledger = load_ledger(ENV)
    assert ledger.canary is None
    # The pre-deploy backup is recorded (last_backup); releases are not.
    assert ledger.model_dump(exclude={"canary", "last_backup"}) == ledger_before


def ledger_snapshot() -> object:
    return load_ledger(ENV).model_dump(exclude={"canary", "last_backup"})


def table_rows() -> list[dict[str, str]]:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"canary-{ENV}"]))
        )
    newest = max(artifacts, key=lambda artifact: artifact.created or 0)
    data = newest.data
    assert isinstance(data, str)
    rows: list[dict[str, str]] = json.loads(data)
    return rows


def test_a_healthy_release_is_promoted_and_serves_everyone(
    canary_platform: LocalPlatform, release_policy: Callable[..., None]
) -> None:
    release_policy(TWO_ANALYSES)
    previous = stable_of(canary_platform)
    started = time.monotonic()
    with UserTraffic(canary_platform.endpoints().edge_url, rate=25, max_seconds=240) as traffic:
        result = canary(env=ENV, version=GOOD)
        time.sleep(1)
    print(f"healthy canary: {time.monotonic() - started:.0f} s, {result.seconds}")
    print(f"traffic: {traffic.report.total} requests, tracks {traffic.report.tracks()}")

    assert result.outcome == "promoted" and result.stable == previous
    assert result.verdicts.get("pass", 0) >= 4 and "fail" not in result.verdicts
    assert serving(canary_platform) == {(GOOD, "stable")}
    assert canary_platform.status().canary_version is None
    assert traffic.report.failed() == 0, "a user request failed during a healthy canary"
    assert traffic.report.tracks()["canary"] > 0
    ledger = load_ledger(ENV)
    assert ledger.stable is not None and ledger.stable.version == GOOD
    assert ledger.stable.strategy == "canary" and ledger.canary is None
    assert ledger.history[0].version == previous
    rows = table_rows()
    assert [row["verdict"] for row in rows if row["verdict"] in {"done", "promoted"}] == [
        "done",
        "done",
        "done",
        "promoted",
    ]
    measured = [row for row in rows if row["verdict"].startswith("pass")]
    assert all(int(row["canary requests"]) >= 20 for row in measured), measured
    assert wait_for(
        lambda: canary_events(GOOD) == ["socialnet.canary.promoted", "socialnet.canary.started"],
        10,
        "events started + promoted",
    )


def test_a_release_failing_30_percent_is_aborted_at_the_first_analysis(
    canary_platform: LocalPlatform, release_policy: Callable[..., None]
) -> None:
    release_policy(TWO_ANALYSES)
    stable, ledger_before = stable_of(canary_platform), ledger_snapshot()
    with (
        UserTraffic(canary_platform.endpoints().edge_url, rate=25, max_seconds=180) as traffic,
        pytest.raises(CanaryAbortedError) as aborted,
    ):
        canary(env=ENV, version=ERRORS, settings={"SOCIALNET_FAULT_ERROR_RATE": "0.3"})
    details = aborted.value.details
    print(f"aborted: {details.reason}; traffic {traffic.report.tracks()}")
    assert (details.step, details.weight, details.measurements) == (2, 25, 1)
    assert "above the policy's 5.0%" in details.reason
    assert "significantly worse" in details.reason
    assert_rolled_back(canary_platform, stable, ledger_before)
    # Only canary answers failed, and only while the canary held 25 %.
    failed = [answer for answer in traffic.report.answers if answer.failed]
    assert failed and {answer.track for answer in failed} == {"canary"}
    assert len(failed) < 0.1 * traffic.report.total
    rows = table_rows()
    assert rows[-1]["verdict"] == "fail" and rows[-1]["weight"] == "25%"
    assert wait_for(
        lambda: canary_events(ERRORS) == ["socialnet.canary.aborted", "socialnet.canary.started"],
        10,
        "events started + aborted",
    )
    # A judged abort left stable untouched: no `release.failed`, so no rollback automation runs.
    assert canary_events(ERRORS, prefix="socialnet.release.") == []
    with get_client(sync_client=True) as client:
        report = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"canary-rollback-{ENV}"]))
        )
    assert report and ERRORS in str(report[-1].data)


def test_a_release_adding_400_ms_is_aborted(
    canary_platform: LocalPlatform, release_policy: Callable[..., None]
) -> None:
    release_policy(TWO_ANALYSES)
    stable, ledger_before = stable_of(canary_platform), ledger_snapshot()
    with (
        UserTraffic(canary_platform.endpoints().edge_url, rate=25, max_seconds=180),
        pytest.raises(CanaryAbortedError) as aborted,
    ):
        canary(env=ENV, version=SLOW, settings={"SOCIALNET_FAULT_LATENCY_MS": "400"})
    details = aborted.value.details
    print(f"aborted: {details.reason}")
    assert (details.step, details.weight) == (2, 25)
    assert "p95" in details.reason and "above the policy's 1.5x" in details.reason
    assert "error ratio" not in details.reason
    assert_rolled_back(canary_platform, stable, ledger_before)


def test_too_little_traffic_is_inconclusive_and_aborts_after_the_policy_limit(
    canary_platform: LocalPlatform, release_policy: Callable[..., None]
) -> None:
    release_policy(ONE_ANALYSIS, inconclusive_limit=2)
    stable, ledger_before = stable_of(canary_platform), ledger_snapshot()
    # 1.5 requests/s: a 25 % canary sees ~4 requests in a 10 s window, the policy needs 20.
    with (
        UserTraffic(canary_platform.endpoints().edge_url, rate=1.5, workers=1, max_seconds=180),
        pytest.raises(CanaryAbortedError) as aborted,
    ):
        canary(env=ENV, version=QUIET)
    details = aborted.value.details
    print(f"aborted: {details.reason}")
    assert details.verdicts == {"inconclusive": 3}
    assert details.reason.startswith("3 inconclusive analyses in a row, the policy allows 2")
    assert "fewer than the 20 the policy needs" in details.reason
    assert_rolled_back(canary_platform, stable, ledger_before)


GATE_STEPS = [
    {"set_weight": 30},
    {"pause": {"until_approved": True, "timeout": "90s"}},
    {"set_weight": 60},
    {"pause": {"until_approved": True, "timeout": "90s"}},
    {"set_weight": 100},
]


def test_an_approved_gate_continues_a_refused_one_aborts_and_the_weight_splits_traffic(
    canary_platform: LocalPlatform, release_policy: Callable[..., None]
) -> None:
    release_policy(GATE_STEPS)
    stable, ledger_before = stable_of(canary_platform), ledger_snapshot()
    run = FlowInThread(lambda: canary(env=ENV, version=GATED))
    try:
        paused = wait_for(lambda: paused_canary_run(GATED), 180, "the canary paused at its gate")
        # While the gate holds the canary at 30 %, users reach it at that share.
        share = canary_share(canary_platform.endpoints().edge_url, requests=400)
        print(f"canary share at 30 %: {share:.3f}")
        assert abs(share - 0.30) <= 0.05
        resume_flow_run(paused.id, run_input={"approve": True, "comment": "dashboards look fine"})
        wait_for(
            lambda: canary_platform.status().canary_weight == 60 and paused_canary_run(GATED),
            120,
            "the canary paused at its second gate, at 60 %",
        )
        paused = paused_canary_run(GATED)
        assert paused is not None
        resume_flow_run(paused.id, run_input={"approve": False, "comment": "not during the sale"})
        run.join(timeout=120)
    finally:
        run.refuse_if_paused(GATED)
    assert isinstance(run.error, CanaryAbortedError), run.error
    details = run.error.details
    assert details.reason == "manual gate: refused: not during the sale"
    assert (details.step, details.weight) == (4, 60)
    assert_rolled_back(canary_platform, stable, ledger_before)
    approval = [row for row in table_rows() if row["verdict"] == "approved"]
    assert approval and approval[0]["why"] == "approved: dashboards look fine"


def test_an_unanswered_gate_times_out_and_aborts(
    canary_platform: LocalPlatform, release_policy: Callable[..., None]
) -> None:
    gate = [{"set_weight": 20}, {"pause": {"until_approved": True, "timeout": "4s"}}]
    release_policy([*gate, {"set_weight": 100}])
    stable, ledger_before = stable_of(canary_platform), ledger_snapshot()
    with pytest.raises(CanaryAbortedError) as aborted:
        canary(env=ENV, version=UNANSWERED)
    assert aborted.value.details.reason == "manual gate: no answer within 4 s"
    assert_rolled_back(canary_platform, stable, ledger_before)


def test_prometheus_stopped_mid_canary_never_leads_to_promotion(
    canary_platform: LocalPlatform, release_policy: Callable[..., None]
) -> None:
    release_policy(TWO_ANALYSES, inconclusive_limit=2)
    stable, ledger_before = stable_of(canary_platform), ledger_snapshot()
    supervisor = canary_platform.supervisor
    try:
        with UserTraffic(canary_platform.endpoints().edge_url, rate=25, max_seconds=240):
            run = FlowInThread(lambda: canary(env=ENV, version=BLIND))
            wait_for(
                lambda: canary_platform.status().canary_weight == 25, 180, "the canary at 25 %"
            )
            supervisor.call("stopProcess", "prometheus", True)
            run.join(timeout=180)
    finally:
        if (supervisor.process("prometheus") or {}).get("statename") != "RUNNING":
            supervisor.call("startProcess", "prometheus", True)
    assert isinstance(run.error, CanaryAbortedError), run.error
    details = run.error.details
    print(f"aborted: {details.reason}")
    assert details.outcome == "aborted" and details.step == 2
    assert "inconclusive analyses in a row" in details.reason
    assert "unreachable" in details.reason
    assert_rolled_back(canary_platform, stable, ledger_before)
    prometheus = canary_platform.endpoints().prometheus_url
    wait_for(lambda: _answers(f"{prometheus}/-/ready"), 30, "Prometheus back")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
