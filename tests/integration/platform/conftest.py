"""One real local platform per test session: supervisord, PostgreSQL, HAProxy, Prometheus, ..."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from socialnet_ops.core.environments import Environment, load_environment
from socialnet_ops.core.paths import repo_root
from socialnet_ops.platforms.base import Build, PlatformError
from socialnet_ops.platforms.local import LocalPlatform
from socialnet_ops.platforms.local.tools import find_binary, python_executable
from tests.support.requirements import unavailable

REQUIRED_BINARIES = (
    "supervisord", "haproxy", "prometheus", "postgres", "initdb", "runuser", "moto_server", "bao",
)  # fmt: skip


def _missing_tool(message: str) -> None:
    unavailable(message)


@pytest.fixture(scope="session")
def platform_state_root() -> Iterator[Path]:
    """A state root the `postgres` system user can traverse (pytest's tmp dirs are 0700)."""
    for name in REQUIRED_BINARIES:
        try:
            find_binary(name)
        except PlatformError as error:
            _missing_tool(str(error))
    root = Path(tempfile.mkdtemp(prefix="snp-"))  # short: unix socket paths are limited
    root.chmod(0o755)
    previous = os.environ.get("SOCIALNET_STATE_DIR")
    os.environ["SOCIALNET_STATE_DIR"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("SOCIALNET_STATE_DIR", None)
    else:
        os.environ["SOCIALNET_STATE_DIR"] = previous
    shutil.rmtree(root, ignore_errors=True)


def platform_environment(name: str = "platform-it") -> Environment:
    """The local environment, renamed, with timeouts short enough for tests."""
    local = load_environment("local")
    settings = local.platform.model_copy(update={"ready_timeout": 60.0, "drain_timeout": 3.0})
    return local.model_copy(update={"name": name, "platform": settings})


@pytest.fixture(scope="session")
def releases(platform_state_root: Path) -> Callable[..., Build]:
    """Make a release folder like the deploy flow does: a copy of the repo's app/."""
    folder = platform_state_root / "releases"

    def make(version: str, runtime_env: dict[str, str] | None = None) -> Build:
        path = folder / version
        if not path.exists():
            shutil.copytree(
                repo_root() / "app", path / "app", ignore=shutil.ignore_patterns("__pycache__")
            )
        return Build(
            version=version,
            git_sha=f"sha-{version}",
            ref=f"v{version}",
            path=path,
            runtime_env=runtime_env or {},
        )

    return make


@pytest.fixture(scope="session")
def platform(platform_state_root: Path, releases: Callable[..., Build]) -> Iterator[LocalPlatform]:
    local = LocalPlatform(platform_environment())
    started = time.monotonic()
    local.start()
    print(f"local platform started in {time.monotonic() - started:.1f} s")
    # The flows migrate before deploying; do the same with the first release's migrations.
    release = releases("1.0.0")
    assert release.path is not None
    result = subprocess.run(
        [python_executable(), "-m", "alembic", "-c", "app/api/alembic.ini", "upgrade", "head"],
        cwd=release.path,
        env={**os.environ, **local.database_env(), "PYTHONPATH": str(release.path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    yield local
    local.stop()


@dataclass
class LoadReport:
    answers: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.answers.values()) + len(self.failures)


class SteadyLoad:
    """GET /version through the edge at a steady rate in a thread, bounded in count and time."""

    def __init__(
        self,
        url: str,
        rate: float = 20.0,
        max_requests: int = 2400,
        max_seconds: float = 120,
        path: str = "/version",
    ):
        self.url = url
        self.path = path
        self.interval = 1.0 / rate
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.report = LoadReport()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(timeout=10.0) as client:
            for _ in range(self.max_requests):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                began = time.monotonic()
                try:
                    response = client.get(f"{self.url}{self.path}")
                    if response.status_code == 200 and self.path == "/version":
                        self.report.answers[response.json()["version"]] += 1
                    elif response.status_code == 200:
                        self.report.answers[self.path] += 1
                    else:
                        self.report.failures.append(f"{response.status_code} {response.text[:100]}")
                except httpx.HTTPError as error:
                    self.report.failures.append(repr(error))
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
