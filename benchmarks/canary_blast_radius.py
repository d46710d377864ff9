"""Blast radius of a bad release: rolling deploy against canary, under the same steady user load.

    uv run python benchmarks/canary_blast_radius.py [--rate 25] [--window 180] [--interval 30]

On one local platform (real replicas, HAProxy, Prometheus) serving a good build:

1. rolling: the deploy flow rolls a build failing 30 % of requests; nothing judges it, so it
   serves until the window ends (as it would until a person noticed);
2. canary: the canary flow releases the same bad build with a production-like policy (10 %, an
   analysis every `interval` seconds); failed user requests are counted over the same window from
   release start, and the time until no user reaches the bad build any more is measured;
3. healthy: the canary flow releases a good build under the same load; it must cost no request.

Prints progress on stderr and, as its last line on stdout, one JSON object:
{"benchmark": "canary_blast_radius", "rolling_failed": ..., "canary_failed": ..., "ratio": ...,
 "time_to_rollback_s": ..., "analysis_interval_s": ..., "healthy_failed": ...}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script: make `flows`, `tests.support` importable

from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from flows.canary import CanaryAbortedError, canary  # noqa: E402
from flows.common import ensure_release_limits  # noqa: E402
from flows.deploy import deploy  # noqa: E402
from flows.rollback import rollback  # noqa: E402
from socialnet_ops.core.environments import load_environment  # noqa: E402
from socialnet_ops.core.results import CanaryResult  # noqa: E402
from socialnet_ops.platforms.local import LocalPlatform  # noqa: E402
from tests.integration.canary.traffic import UserTraffic  # noqa: E402
from tests.support.prefect import running_local_platform  # noqa: E402

ENV = "canary-bench"
# Builds are cached by version in Prefect's result storage, which outlives this run's state folder.
RUN = secrets.token_hex(3)
BAD = {"SOCIALNET_FAULT_ERROR_RATE": "0.3"}


def log(message: str) -> None:
    print(f"[canary_blast_radius] {message}", file=sys.stderr, flush=True)


def write_catalog(folder: Path, interval: float, min_requests: int) -> None:
    """The local environment, renamed, with a production-like canary policy."""
    document = yaml.safe_load((REPO_ROOT / "deployments/environments/local.yaml").read_text())
    document["name"] = ENV
    document["platform"].update({"ready_timeout": "60s", "drain_timeout": "3s"})
    document["release"] = {
        "strategy": "canary",
        "steps": [
            {"set_weight": 10},
            {"analysis": {"duration": f"{2 * interval}s"}},
            {"set_weight": 50},
            {"analysis": {"duration": f"{interval}s"}},
            {"set_weight": 100},
        ],
        "analysis": {
            "interval": f"{interval}s",
            "min_requests": min_requests,
            "max_error_ratio": 0.05,
            "significance": 0.05,
            "max_latency_ratio": 1.5,
            "latency_quantile": "p95",
            "failure_limit": 0,
            "inconclusive_limit": 3,
        },
    }
    (folder / f"{ENV}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


@contextlib.contextmanager
def catalog(interval: float, min_requests: int) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="snb-catalog-"))
    previous = os.environ.get("SOCIALNET_ENVIRONMENTS_DIR")
    os.environ["SOCIALNET_ENVIRONMENTS_DIR"] = str(folder)
    write_catalog(folder, interval, min_requests)
    try:
        yield folder
    finally:
        if previous is None:
            os.environ.pop("SOCIALNET_ENVIRONMENTS_DIR", None)
        else:
            os.environ["SOCIALNET_ENVIRONMENTS_DIR"] = previous
        shutil.rmtree(folder, ignore_errors=True)


def wait_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def rolling_scenario(platform: LocalPlatform, rate: float, window: float) -> dict[str, Any]:
    edge = platform.endpoints().edge_url
    with UserTraffic(edge, rate=rate, max_seconds=window + 30) as traffic:
        time.sleep(2)
        start = time.time()
        deploy(env=ENV, version=f"bad-rolling-{RUN}", settings=BAD)
        rolled = time.time() - start
        log(f"rolling: the bad build serves everyone {rolled:.0f} s after release start")
        wait_until(start + window)
    failed = traffic.report.failed(start, start + window)
    log(f"rolling: {failed} failed of {len(traffic.report.between(start, start + window))}")
    rollback(env=ENV, reason="benchmark: restore the good build")
    return {"failed": failed, "rolled_s": round(rolled, 1)}


def canary_scenario(platform: LocalPlatform, rate: float, window: float) -> dict[str, Any]:
    edge = platform.endpoints().edge_url
    details: CanaryResult | None = None
    with UserTraffic(edge, rate=rate, max_seconds=window + 30) as traffic:
        time.sleep(2)
        start = time.time()
        try:
            canary(env=ENV, version=f"bad-canary-{RUN}", settings=BAD)
        except CanaryAbortedError as aborted:
            details = aborted.details
        wait_until(start + window)
    if details is None or details.outcome != "aborted":
        raise SystemExit("the canary of the bad build was not aborted")
    answers = traffic.report.between(start, start + window)
    on_canary = [answer.at + answer.seconds for answer in answers if answer.track == "canary"]
    # Users stop reaching the bad build when the last canary answer ends.
    back = max(on_canary) if on_canary else details.ended_at
    failed = traffic.report.failed(start, start + window)
    log(f"canary: aborted at {details.step_title}: {details.reason}")
    log(f"canary: {failed} failed of {len(answers)}; traffic back on stable {back - start:.0f} s")
    return {
        "failed": failed,
        "time_to_rollback_s": round(back - start, 1),
        "flow_ended_s": round(details.ended_at - start, 1),
    }


def healthy_scenario(platform: LocalPlatform, rate: float) -> dict[str, Any]:
    edge = platform.endpoints().edge_url
    with UserTraffic(edge, rate=rate, max_seconds=600) as traffic:
        time.sleep(2)
        start = time.time()
        try:
            outcome: str = canary(env=ENV, version=f"good-canary-{RUN}").outcome
        except CanaryAbortedError as aborted:
            outcome = f"aborted: {aborted.details.reason}"
        end = time.time()
        time.sleep(2)
    failed = traffic.report.failed(start, end + 2)
    log(f"healthy: {outcome} in {end - start:.0f} s, {failed} failed of {traffic.report.total}")
    return {"failed": failed, "outcome": outcome, "seconds": round(end - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=25.0, help="user requests per second")
    parser.add_argument("--window", type=float, default=180.0, help="seconds counted per release")
    parser.add_argument("--interval", type=float, default=30.0, help="analysis interval (s)")
    parser.add_argument("--min-requests", type=int, default=50)
    options = parser.parse_args()

    began = time.monotonic()
    stdout = sys.stdout
    # Flows and tools may print: keep stdout for the one JSON line.
    with (
        contextlib.redirect_stdout(sys.stderr),
        prefect_test_harness(server_startup_timeout=120),
        catalog(options.interval, options.min_requests),
    ):
        ensure_release_limits([ENV])
        with running_local_platform(load_environment(ENV), prefix="snb-") as platform:
            log("platform up; deploying the good build")
            deploy(env=ENV, version=f"good-{RUN}")
            rolling = rolling_scenario(platform, options.rate, options.window)
            canary_run = canary_scenario(platform, options.rate, options.window)
            healthy = healthy_scenario(platform, options.rate)
    result = {
        "benchmark": "canary_blast_radius",
        "rolling_failed": rolling["failed"],
        "canary_failed": canary_run["failed"],
        "ratio": round(canary_run["failed"] / max(1, rolling["failed"]), 4),
        "time_to_rollback_s": canary_run["time_to_rollback_s"],
        "analysis_interval_s": options.interval,
        "healthy_failed": healthy["failed"],
        "healthy_outcome": healthy["outcome"],
        "window_s": options.window,
        "rate_rps": options.rate,
        "bad_error_rate": float(BAD["SOCIALNET_FAULT_ERROR_RATE"]),
        "total_s": round(time.monotonic() - began, 1),
    }
    print(json.dumps(result), file=stdout, flush=True)


if __name__ == "__main__":
    main()
