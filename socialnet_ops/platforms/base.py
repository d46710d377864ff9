"""The platform interface the flows use; local and Kubernetes implement it. No Prefect here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from socialnet_ops.core.release import Build as Build  # the interface speaks of builds

Track = Literal["stable", "canary"]

# Progress callbacks let flows stream what the platform does into their run log.
Progress = Callable[[str], None]


class PlatformError(Exception):
    """A platform operation that failed; the message names the program, port or file involved."""


class ReplicaNotReadyError(PlatformError):
    pass


@dataclass(frozen=True)
class Endpoints:
    edge_url: str  # what users reach: front at /, API at /api
    prometheus_url: str
    database_host: str
    database_port: int
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProgramStatus:
    name: str
    state: str  # RUNNING, STARTING, BACKOFF, EXITED, FATAL, STOPPED ...
    detail: str = ""
    restarts: int = 0


@dataclass(frozen=True)
class PlatformStatus:
    environment: str
    running: bool
    stable_version: str | None
    canary_version: str | None
    canary_weight: int
    programs: list[ProgramStatus]
    endpoints: Endpoints | None


class Platform(Protocol):
    """What a flow can ask of an environment's platform. Every operation is idempotent."""

    environment: str

    # Bringing the platform up and down. Local: the environment's supervisord and every program;
    # Kubernetes: check the cluster answers (nothing to start), stop is a no-op.
    def start(self, progress: Progress | None = None) -> Endpoints: ...

    def stop(self, progress: Progress | None = None) -> None: ...

    def is_running(self) -> bool: ...

    def endpoints(self) -> Endpoints: ...

    def status(self) -> PlatformStatus: ...

    def database_env(self) -> dict[str, str]:
        """`SOCIALNET_DB_*` settings a migration uses to reach the database (password as a file)."""
        ...

    def deploy(self, build: Build, progress: Progress | None = None) -> None:
        """Replace the stable track with `build`, one replica at a time, without a failed request.

        A replica that never becomes ready raises ReplicaNotReadyError; the old replicas keep
        serving and the new ones are removed.
        """

    def start_canary(self, build: Build, progress: Progress | None = None) -> None:
        """Start the canary track on `build` with weight 0."""

    def set_canary_weight(self, weight: int) -> None:
        """Send `weight` percent of API traffic to the canary track."""

    def promote_canary(self, progress: Progress | None = None) -> None:
        """Make the canary build stable (rolling, no failed request), then empty the canary track."""

    def abort_canary(self, progress: Progress | None = None) -> None:
        """Weight 0, canary replicas stopped; the stable track untouched."""

    def rollback(self, build: Build, progress: Progress | None = None) -> None:
        """Return the stable track to an earlier `build` with the same mechanics as deploy."""

    def rendered_digest(self) -> str | None:
        """A digest of what the platform rendered for the serving release (Helm: its
        manifests); None where nothing is rendered (the local platform)."""
