"""A local platform with a stable release, and a catalog whose release policy each test sets.

The canary flow loads its environment by name from the catalog (SOCIALNET_ENVIRONMENTS_DIR), so
the tests write `canary-it.yaml` into a temporary catalog with short steps (5 s analysis interval)
before each run. The environment has its own name: its ledger and release slot are its own.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.client.schemas.objects import FlowRun
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.flow_runs import resume_flow_run

from flows.common import ensure_release_limits
from flows.deploy import deploy
from socialnet_ops.core.environments import load_environment
from socialnet_ops.core.paths import repo_root
from socialnet_ops.platforms.local import LocalPlatform
from tests.support.prefect import environment_variable, running_local_platform

ENV = "canary-it"
# Builds are cached by version in Prefect's result storage, which outlives a test session's state
# folder: versions unique to the session never meet a cached build whose folder is gone.
SESSION = secrets.token_hex(3)


def release(name: str) -> str:
    return f"{name}-{SESSION}"


BASE_VERSION = release("base")
# Analysis every 5 s over a 10 s window; 20 canary requests at least; 2 inconclusive in a row at
# most. With 25 requests/s of traffic a 25 % canary sees ~60 requests a window.
FAST_ANALYSIS: dict[str, Any] = {
    "interval": "5s",
    "min_requests": 20,
    "max_error_ratio": 0.05,
    "significance": 0.05,
    "max_latency_ratio": 1.5,
    "latency_quantile": "p95",
    "failure_limit": 0,
    "inconclusive_limit": 2,
}


def write_environment(folder: Path, steps: list[dict[str, Any]], **analysis: Any) -> None:
    document = yaml.safe_load((repo_root() / "deployments/environments/local.yaml").read_text())
    document["name"] = ENV
    document["platform"].update({"ready_timeout": "60s", "drain_timeout": "3s"})
    document["release"] = {
        "strategy": "canary",
        "steps": steps,
        "analysis": {**FAST_ANALYSIS, **analysis},
    }
    (folder / f"{ENV}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


@pytest.fixture(scope="package")
def catalog(prefect_server: None) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="snc-catalog-"))
    try:
        with environment_variable("SOCIALNET_ENVIRONMENTS_DIR", str(folder)):
            write_environment(
                folder, [{"set_weight": 50}, {"analysis": {"duration": "10s"}}, {"set_weight": 100}]
            )
            ensure_release_limits([ENV])
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="package")
def canary_platform(catalog: Path) -> Iterator[LocalPlatform]:
    """The platform, its database migrated and a stable release serving (by the deploy flow)."""
    with running_local_platform(load_environment(ENV), prefix="snc-") as platform:
        deploy(env=ENV, version=BASE_VERSION)
        yield platform


@pytest.fixture
def release_policy(catalog: Path, canary_platform: LocalPlatform) -> Iterator[Callable[..., None]]:
    """Set the steps and analysis of the next canary; no test leaves a canary behind."""

    def write(steps: list[dict[str, Any]], **analysis: Any) -> None:
        write_environment(catalog, steps, **analysis)

    yield write
    canary_platform.abort_canary()


class FlowInThread:
    """Run a flow call in a thread (a paused flow blocks where it is) and keep its outcome."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self.result = call()
        except BaseException as error:
            self.error = error

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the flow did not finish within {timeout} s"

    def refuse_if_paused(self, version: str, timeout: float = 120) -> None:
        """After a failed test: a run left paused at a gate would hold the release slot."""
        if not self._thread.is_alive():
            return
        run = paused_canary_run(version)
        if run is not None:
            with contextlib.suppress(Exception):
                resume_flow_run(run.id, run_input={"approve": False, "comment": "test cleanup"})
        self._thread.join(timeout)


def canary_run(version: str) -> FlowRun | None:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"canary-{ENV}-{version}"]))
        )
    return runs[0] if runs else None


def paused_canary_run(version: str) -> FlowRun | None:
    run = canary_run(version)
    return run if run and run.state and run.state.is_paused() else None


def canary_events(version: str, prefix: str = "socialnet.canary.") -> list[str]:
    """Names of the `socialnet.canary.*` (or `prefix`) events about this environment and version."""
    with get_client(sync_client=True) as client:
        page = client.read_events(
            filter=EventFilter(
                event=EventNameFilter(prefix=[prefix]),
                resource=EventResourceFilter(id=[f"socialnet.environment.{ENV}"]),
            ),
            limit=50,
        )
    return sorted(event.event for event in page.events if event.payload.get("version") == version)
