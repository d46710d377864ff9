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

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: `benchmarks`

from benchmarks.canary_common import (
    BAD,
    ENV,
    RUN,
    arguments,
    bench_platform,
    logger,
    release_canary,
    roll_out,
    under_load,
    users,
)
from flows.canary import CanaryAbortedError, canary
from socialnet_ops.platforms.local import LocalPlatform
from tests.integration.canary.traffic import UserTraffic

log = logger("canary_blast_radius")


def rolling_scenario(platform: LocalPlatform, rate: float, window: float) -> dict[str, Any]:
    released = roll_out(platform, rate, window, f"bad-rolling-{RUN}", BAD)
    log(f"rolling: the bad build served everyone {released.seconds:.0f} s after release start")
    failed = released.failed("users")
    log(f"rolling: {failed} failed of {released.total('users')}")
    return {"failed": failed, "rolled_s": round(released.seconds, 1)}


def canary_scenario(platform: LocalPlatform, rate: float, window: float) -> dict[str, Any]:
    released = under_load(
        platform, window, lambda: release_canary(f"bad-canary-{RUN}", BAD), users(rate)
    )
    details, start = released.result, released.start
    if details.outcome != "aborted":
        raise SystemExit("the canary of the bad build was not aborted")
    on_canary = [answer.at + answer.seconds for answer in released.on_canary("users")]
    # Users stop reaching the bad build when the last canary answer ends.
    back = max(on_canary) if on_canary else details.ended_at
    failed = released.failed("users")
    log(f"canary: aborted at {details.step_title}: {details.reason}")
    log(
        f"canary: {failed} failed of {released.total('users')}; "
        f"traffic back on stable {back - start:.0f} s"
    )
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
    options = arguments(__doc__.split("\n\n")[0], window=180.0).parse_args()

    began = time.monotonic()
    with bench_platform(log, options.interval, options.min_requests) as bench:
        rolling = rolling_scenario(bench.platform, options.rate, options.window)
        canary_run = canary_scenario(bench.platform, options.rate, options.window)
        healthy = healthy_scenario(bench.platform, options.rate)
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
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
