"""A latency regression by canary: a build adding 300 ms to every user route, answering 200.

    uv run python benchmarks/canary_latency_regression.py [--rate 25] [--window 120] [--interval 30]

Issue #22. On one local platform (real replicas, HAProxy, Prometheus) serving a good build, under
steady user load (`--rate` requests per second, no header: users follow the weight; enough
senders that the rate holds when every answer is 300 ms late: users do not wait for each other):

1. canary: the canary flow releases a build started with `SOCIALNET_FAULT_LATENCY_MS=300` (every
   `/api/...` answer 300 ms late, none failed) with canary_blast_radius's production-like policy
   (10 %, an analysis every `interval` seconds judging p95 canary/stable against 1.5, no failure
   tolerated). Goal: aborted at the first analysis. User requests the canary track answered over
   the window from release start are the ones the bad build slowed;
2. rolling (the baseline): the deploy flow rolls the same build under the same load; nothing judges
   it, so it serves everyone until the window ends. Its slowed requests are the answers that took
   300 ms or more (every answer of the slow build does; the platform is torn down right after).

Prints progress on stderr and, as its last line on stdout, one JSON object:

- `aborted`: the canary flow aborted the release; `reason`, `aborted_at`: its reason and step;
- `seconds_to_abort`: release start -> the canary flow's end (its abort done);
- `analyses_before_abort`: measurements the flow took up to the abort (goal 1); `verdicts`;
- `slowed_requests`: user requests answered by the canary track within the window;
- `slow_answers`: canary run, user answers of 300 ms or more on any track (`slowed_requests`
  plus the good build's own slow answers: the noise of the baseline's count);
- `rolling_slowed_requests`, `rolling_total_requests`, `rolled_s`: the baseline;
- `ratio`: slowed_requests / rolling_slowed_requests;
- `total_requests`, `failed_requests`: user requests within the canary's window, failed ones;
- `interval_s`, `rate_rps`, `workers` (senders), `window_s`, `latency_ms`, `seconds` (whole run).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: `benchmarks`

from benchmarks.canary_common import (
    RUN,
    arguments,
    bench_platform,
    canary_figures,
    logger,
    release_canary,
    roll_out,
    under_load,
    users,
)
from socialnet_ops.platforms.local import LocalPlatform
from tests.integration.canary.traffic import Answer

LATENCY_MS = 300
SLOW = {"SOCIALNET_FAULT_LATENCY_MS": str(LATENCY_MS)}
log = logger("canary_latency_regression")


def workers(rate: float) -> int:
    """Enough senders to keep `rate` when every answer is slow (users do not wait for others)."""
    return max(6, math.ceil(rate * 2 * LATENCY_MS / 1000))


def slow(answers: list[Answer]) -> int:
    """Answers the slow build could have given: every one of them takes LATENCY_MS or more."""
    return sum(answer.seconds >= LATENCY_MS / 1000 for answer in answers)


def canary_scenario(platform: LocalPlatform, rate: float, window: float) -> dict[str, Any]:
    released = under_load(
        platform,
        window,
        lambda: release_canary(f"slow-canary-{RUN}", SLOW),
        users(rate),
        workers(rate),
    )
    figures, answers = canary_figures(released), released.answers["users"]
    slowed = len(released.on_canary("users"))
    log(
        f"canary: {released.result.outcome} at {figures['aborted_at']} after "
        f"{figures['analyses_before_abort']} analysis(es), {figures['seconds_to_abort']} s after "
        f"release start: {figures['reason']}"
    )
    log(f"canary: {slowed} of {len(answers)} user requests slowed, {slow(answers)} took 300 ms+")
    return {
        **figures,
        "slowed_requests": slowed,
        "slow_answers": slow(answers),
        "total_requests": len(answers),
        "failed_requests": released.failed("users"),
    }


def rolling_scenario(platform: LocalPlatform, rate: float, window: float) -> dict[str, Any]:
    released = roll_out(
        platform, rate, window, f"slow-rolling-{RUN}", SLOW, restore=False, workers=workers(rate)
    )
    answers = released.answers["users"]
    log(f"rolling: the slow build served everyone {released.seconds:.0f} s after release start")
    log(f"rolling: {slow(answers)} of {len(answers)} user requests took 300 ms or more")
    return {
        "rolling_slowed_requests": slow(answers),
        "rolling_total_requests": len(answers),
        "rolled_s": round(released.seconds, 1),
    }


def main() -> None:
    options = arguments(__doc__.split("\n\n")[0], window=120.0).parse_args()

    began = time.monotonic()
    with bench_platform(log, options.interval, options.min_requests) as bench:
        canary_run = canary_scenario(bench.platform, options.rate, options.window)
        rolling = rolling_scenario(bench.platform, options.rate, options.window)
    result = {
        "benchmark": "canary_latency_regression",
        **canary_run,
        **rolling,
        "ratio": round(
            canary_run["slowed_requests"] / max(1, rolling["rolling_slowed_requests"]), 4
        ),
        "interval_s": options.interval,
        "rate_rps": options.rate,
        "workers": workers(options.rate),
        "window_s": options.window,
        "latency_ms": LATENCY_MS,
        "seconds": round(time.monotonic() - began, 1),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
