"""Shared by the canary benchmarks (canary_blast_radius, canary_latency_regression,
header_canary_blast_radius); not a benchmark itself.

One local platform (real replicas, HAProxy, Prometheus) in a Prefect test harness, serving a good
build, with a temporary environment catalog holding `ENV` and a production-like canary policy
(10 %, an analysis of two intervals, 50 %, one more, 100 %); releases under steady user load
(tests/integration/canary/traffic.py `UserTraffic`), the answers counted over a fixed window from
release start.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `flows`, `tests.support` importable
    sys.path.insert(0, str(REPO_ROOT))

from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from flows.canary import CanaryAbortedError, canary  # noqa: E402
from flows.common import ensure_release_limits  # noqa: E402
from flows.deploy import deploy  # noqa: E402
from flows.rollback import rollback  # noqa: E402
from socialnet_ops.core.environments import load_environment  # noqa: E402
from socialnet_ops.core.results import CanaryResult  # noqa: E402
from socialnet_ops.platforms.local import LocalPlatform  # noqa: E402
from tests.integration.canary.traffic import Answer, UserTraffic  # noqa: E402
from tests.support.prefect import environment_variable, running_local_platform  # noqa: E402

ENV = "canary-bench"
# Builds are cached by version in Prefect's result storage, which outlives this run's state folder.
RUN = secrets.token_hex(3)
# A bad build: 30 % of user requests fail.
BAD = {"SOCIALNET_FAULT_ERROR_RATE": "0.3"}
# What a tester sends to reach the canary (`release.traffic.header`, its default `header_value`).
TESTER_HEADERS = {"X-Canary": "always"}
# Loads outlive the window by this much at most when a release takes longer than the window.
LOAD_SLACK_S = 30.0
R = TypeVar("R")
# A steady load: requests per second, headers sent with each.
Load = tuple[float, dict[str, str] | None]


def logger(benchmark: str) -> Callable[[str], None]:
    def log(message: str) -> None:
        print(f"[{benchmark}] {message}", file=sys.stderr, flush=True)

    return log


def arguments(description: str, window: float) -> argparse.ArgumentParser:
    """The options every canary benchmark takes (load, window, analysis)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rate", type=float, default=25.0, help="user requests per second")
    parser.add_argument("--window", type=float, default=window, help="seconds counted per release")
    parser.add_argument("--interval", type=float, default=30.0, help="analysis interval (s)")
    parser.add_argument("--min-requests", type=int, default=50)
    return parser


def write_catalog(
    folder: Path, interval: float, min_requests: int, traffic: dict[str, Any] | None = None
) -> None:
    """The local environment, renamed, with a production-like canary policy (and `traffic`:
    `release.traffic`, none: every user follows the weight)."""
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
    if traffic is not None:
        document["release"]["traffic"] = traffic
    (folder / f"{ENV}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


@contextlib.contextmanager
def catalog(
    interval: float, min_requests: int, traffic: dict[str, Any] | None = None
) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="snb-catalog-"))
    try:
        with environment_variable("SOCIALNET_ENVIRONMENTS_DIR", str(folder)):
            write_catalog(folder, interval, min_requests, traffic)
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Bench:
    """The running platform and the catalog that defines its environment."""

    platform: LocalPlatform
    folder: Path
    interval: float
    min_requests: int

    def set_traffic(self, traffic: dict[str, Any] | None) -> None:
        """Rewrite `release.traffic`: flows read the catalog at every run (the edge's header and
        cookie names stay those it started with)."""
        write_catalog(self.folder, self.interval, self.min_requests, traffic)


@contextlib.contextmanager
def bench_platform(
    log: Callable[[str], None],
    interval: float,
    min_requests: int,
    traffic: dict[str, Any] | None = None,
) -> Iterator[Bench]:
    """A Prefect test harness and a local platform serving the good build `good-RUN`.

    Inside, stdout goes to stderr (flows and tools may print): stdout keeps the one JSON line."""
    with (
        contextlib.redirect_stdout(sys.stderr),
        prefect_test_harness(server_startup_timeout=120),
        catalog(interval, min_requests, traffic) as folder,
    ):
        ensure_release_limits([ENV])
        with running_local_platform(load_environment(ENV), prefix="snb-") as platform:
            log("platform up; deploying the good build")
            deploy(env=ENV, version=f"good-{RUN}")
            yield Bench(platform, folder, interval, min_requests)


def wait_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


@dataclass
class Released(Generic[R]):
    """A release under load: what the release returned, its start (time.time()) and duration,
    and each load's answers sent within the window from `start`."""

    result: R
    start: float
    seconds: float
    answers: dict[str, list[Answer]]

    def total(self, load: str) -> int:
        return len(self.answers.get(load, []))

    def failed(self, load: str) -> int:
        return sum(answer.failed for answer in self.answers.get(load, []))

    def on_canary(self, load: str) -> list[Answer]:
        return [answer for answer in self.answers.get(load, []) if answer.track == "canary"]


def under_load(
    platform: LocalPlatform,
    window: float,
    release: Callable[[], R],
    loads: dict[str, Load],
    workers: int = 6,
) -> Released[R]:
    """Run `release` under `loads` (name -> rate, headers), started 2 s before; hold the loads
    until `window` seconds after release start (or until the release returns, if later).

    Each load sends over `workers` threads, one request in flight each: to keep its rate when
    answers are slow, a load needs more than rate x answer time of them."""
    edge = platform.endpoints().edge_url
    traffic = {
        name: UserTraffic(
            edge,
            rate=rate,
            workers=workers,
            max_seconds=window + LOAD_SLACK_S,
            max_requests=math.ceil(rate * (window + LOAD_SLACK_S)) + 1,
            headers=headers,
        )
        for name, (rate, headers) in loads.items()
        if rate > 0
    }
    with contextlib.ExitStack() as stack:
        for load in traffic.values():
            stack.enter_context(load)
        time.sleep(2)
        start = time.time()
        result = release()
        seconds = time.time() - start
        wait_until(start + window)
    answers = {name: load.report.between(start, start + window) for name, load in traffic.items()}
    return Released(result, start, seconds, answers)


def users(rate: float) -> dict[str, Load]:
    """Ordinary users only: no header, they follow the weight."""
    return {"users": (rate, None)}


def release_canary(version: str, settings: dict[str, str] | None = None) -> CanaryResult:
    """The canary flow's result, aborted or promoted."""
    try:
        return canary(env=ENV, version=version, settings=settings)
    except CanaryAbortedError as aborted:
        return aborted.details


def roll_out(
    platform: LocalPlatform,
    rate: float,
    window: float,
    version: str,
    settings: dict[str, str],
    restore: bool = True,
    workers: int = 6,
) -> Released[None]:
    """The deploy flow rolls `version` to everyone under user load; nothing judges it. `restore`:
    roll back to the good build afterwards (another release follows)."""

    def rolling() -> None:
        deploy(env=ENV, version=version, settings=settings)

    released = under_load(platform, window, rolling, users(rate), workers)
    if restore:
        rollback(env=ENV, reason="benchmark: restore the good build")
    return released


def canary_figures(released: Released[CanaryResult]) -> dict[str, Any]:
    """The canary flow's result as JSON keys, its times from release start."""
    details = released.result
    return {
        "aborted": details.outcome == "aborted",
        "reason": details.reason,
        "aborted_at": details.step_title,
        "seconds_to_abort": round(details.ended_at - released.start, 1),
        "analyses_before_abort": details.measurements,
        "verdicts": details.verdicts,
    }
