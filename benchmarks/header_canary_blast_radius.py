"""Blast radius of a bad release shown to testers by header only (`release.traffic`, mode ab).

    uv run python benchmarks/header_canary_blast_radius.py [--rate 25] [--testers-rate 4]
        [--window 120] [--interval 30]

Issue #22. On one local platform (real replicas, HAProxy, Prometheus) serving a good build:

1. header: the environment's policy is canary_blast_radius's (10 %, an analysis every `interval`
   seconds, no failure tolerated) with `release.traffic: {mode: ab, header: X-Canary}`: only
   requests carrying `X-Canary: always` reach the canary, the weight steps send users nothing, and
   the analysis judges the canary on those requests. Two steady loads at once: ordinary users
   (`--rate`, no header) and testers (`--testers-rate`, with the header; enough for the policy's
   `min_requests` per interval). The canary flow releases a build failing 30 % of requests
   (`SOCIALNET_FAULT_ERROR_RATE=0.3`). Goal: no user request fails; the testers' failures make
   the first analysis abort it;
2. weighted (the baseline): the same bad build released by the same policy without header
   routing (users get 10 % by weight, then the analysis judges their requests), under the users'
   load alone: the user requests it fails are what header routing saves.

Failed requests are counted over the same window from each release's start.

Prints progress on stderr and, as its last line on stdout, one JSON object:

- `users_failed` (goal 0), `users_total`, `users_on_canary` (users the canary answered: 0);
- `testers_failed`, `testers_total`, `testers_on_canary`;
- `aborted`, `reason`, `aborted_at`, `seconds_to_abort` (release start -> the flow's end, its
  abort done), `analyses_before_abort`, `verdicts`: the header canary flow's result;
- `weighted_users_failed`, `weighted_users_total`, `weighted_aborted`,
  `weighted_seconds_to_abort`, `weighted_analyses_before_abort`: the baseline;
- `rate_rps`, `testers_rate_rps`, `interval_s`, `window_s`, `bad_error_rate`, `seconds` (whole run).
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
    RUN,
    TESTER_HEADERS,
    Bench,
    arguments,
    bench_platform,
    canary_figures,
    logger,
    release_canary,
    under_load,
    users,
)

HEADER_ONLY = {"mode": "ab", "header": next(iter(TESTER_HEADERS))}
log = logger("header_canary_blast_radius")


def header_scenario(
    bench: Bench, rate: float, testers_rate: float, window: float
) -> dict[str, Any]:
    loads = {**users(rate), "testers": (testers_rate, TESTER_HEADERS)}
    released = under_load(
        bench.platform, window, lambda: release_canary(f"bad-header-{RUN}", BAD), loads
    )
    figures = canary_figures(released)
    log(
        f"header: {released.result.outcome} at {figures['aborted_at']} after "
        f"{figures['analyses_before_abort']} analysis(es), {figures['seconds_to_abort']} s: "
        f"{figures['reason']}"
    )
    counts: dict[str, Any] = {}
    for load in ("users", "testers"):
        counts[f"{load}_failed"] = released.failed(load)
        counts[f"{load}_total"] = released.total(load)
        counts[f"{load}_on_canary"] = len(released.on_canary(load))
        log(
            f"header: {load}: {counts[f'{load}_failed']} failed of {counts[f'{load}_total']}, "
            f"{counts[f'{load}_on_canary']} answered by the canary"
        )
    return {**counts, **figures}


def weighted_scenario(bench: Bench, rate: float, window: float) -> dict[str, Any]:
    bench.set_traffic(None)  # every user follows the weight: 10 % reach the canary
    released = under_load(
        bench.platform, window, lambda: release_canary(f"bad-weighted-{RUN}", BAD), users(rate)
    )
    figures = canary_figures(released)
    failed, total = released.failed("users"), released.total("users")
    log(
        f"weighted: {released.result.outcome} at {figures['aborted_at']} after "
        f"{figures['seconds_to_abort']} s; users: {failed} failed of {total}"
    )
    return {
        "weighted_users_failed": failed,
        "weighted_users_total": total,
        "weighted_aborted": figures["aborted"],
        "weighted_seconds_to_abort": figures["seconds_to_abort"],
        "weighted_analyses_before_abort": figures["analyses_before_abort"],
    }


def main() -> None:
    parser = arguments(__doc__.split("\n\n")[0], window=120.0)
    parser.add_argument(
        "--testers-rate",
        type=float,
        default=4.0,
        help="tester requests per second (with the header; the analysis judges only these)",
    )
    options = parser.parse_args()

    began = time.monotonic()
    with bench_platform(log, options.interval, options.min_requests, HEADER_ONLY) as bench:
        header = header_scenario(bench, options.rate, options.testers_rate, options.window)
        weighted = weighted_scenario(bench, options.rate, options.window)
    result = {
        "benchmark": "header_canary_blast_radius",
        **header,
        **weighted,
        "rate_rps": options.rate,
        "testers_rate_rps": options.testers_rate,
        "interval_s": options.interval,
        "window_s": options.window,
        "bad_error_rate": float(BAD["SOCIALNET_FAULT_ERROR_RATE"]),
        "seconds": round(time.monotonic() - began, 1),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
