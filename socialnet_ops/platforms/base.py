"""The platform interface the flows use; local and Kubernetes implement it. No Prefect here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from socialnet_ops.adapters import images
from socialnet_ops.core.backups import EngineAccess
from socialnet_ops.core.ledger import CanaryRecord, ControlRequest
from socialnet_ops.core.release import Build as Build  # the interface speaks of builds
from socialnet_ops.core.secrets_catalog import RuntimeSecrets

Track = Literal["stable", "canary"]

# Progress callbacks let flows stream what the platform does into their run log.
Progress = Callable[[str], None]


class PlatformError(Exception):
    """A platform operation that failed; the message names the program, port or file involved."""


class ReplicaNotReadyError(PlatformError):
    pass


def require_pushed_images(build: Build) -> None:
    """Every image `build` is pinned to (by digest) is in its registry; checked before anything
    changes, the error names the image."""
    for component, reference in sorted(build.images.items()):
        if "@" not in reference:
            continue
        try:
            found = images.in_registry(reference)
        except images.ImageError as error:
            raise PlatformError(f"build {build.version}: {component} image: {error}") from None
        if not found:
            raise PlatformError(
                f"build {build.version}: {component} image {reference} is not in its registry"
            )


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
    # How the app runs: "containers (podman)", or "processes: <why>" (local); Kubernetes: "pods".
    runtime: str = ""
    # The images the stable track runs (component -> registry/repository@sha256:...), if any.
    images: dict[str, str] = field(default_factory=dict)


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

    def backup_engine(self) -> EngineAccess | None:
        """How the flows run pgBackRest for the environment's cluster; None where the data
        directory is out of their reach (Kubernetes: the database's own operator backs it up)."""

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

    def track_urls(self, track: Literal["stable", "canary"]) -> list[str]:
        """Where the control plane reaches a track's API directly, past the edge (pre-rollout
        tests, load tests); empty when the track runs no replica."""

    # --- the canary's stored state: kept with the canary track, dropped when it empties ---------

    def canary_record(self) -> CanaryRecord | None:
        """Where the canary in flight stands, as its run last stored it; None: none in flight."""

    def save_canary_record(self, record: CanaryRecord | None) -> None:
        """Store where the canary stands (its run does at every step); None forgets it."""

    def canary_request(self) -> ControlRequest | None:
        """The promote-now or abort-now request waiting for the canary's run, if any."""

    def request_canary(self, request: ControlRequest | None) -> None:
        """Leave a request for the canary's run (None: the run took it); stored apart from the
        record, so the run's writes never lose one."""

    def rollback(self, build: Build, progress: Progress | None = None) -> None:
        """Return the stable track to an earlier `build` with the same mechanics as deploy."""

    def image_registry(self) -> str | None:
        """Where a build pushes the app's images (`host:port`); None when builds carry none
        (the local platform without a container engine, which then runs processes)."""

    def rendered_digest(self) -> str | None:
        """A digest of what the platform rendered for the serving release (Helm: its
        manifests); None where nothing is rendered (the local platform)."""

    # --- secrets: Vault holds them, the platform hands them to its replicas ----------------------

    def vault_secret_id_files(self) -> Mapping[str, Path]:
        """The AppRole secret id file of each Vault consumer (flows, webhooks) this platform
        keeps, for the bootstrap to fill; empty where the operator issues them (Kubernetes)."""

    def installed_secret(self, name: str) -> Mapping[str, str] | None:
        """The copy of secret `name` installed last, to re-seed a Vault that forgot it (the
        local dev server keeps nothing across restarts); None where nothing is read back."""

    def install_secrets(self, values: RuntimeSecrets, progress: Progress | None = None) -> str:
        """Put the secrets where the replicas read them when they start (local: the database
        login and 0600 files; Kubernetes: the Secret the chart mounts); returns where."""

    def standing_secrets(self, progress: Progress | None = None) -> str | None:
        """None when a deploy must install the secrets before replicas roll (local); else what
        the replicas read instead, said through `progress` (Kubernetes: the Secret the secrets
        flow wrote)."""

    @property
    def rotates_secrets(self) -> bool:
        """Whether restart_replicas and revoke_database_logins work here: a rotation rolls the
        replicas onto new secrets, then revokes the old login, under traffic."""

    def restart_replicas(self, progress: Progress | None = None) -> None:
        """Fresh replicas of the serving builds, one at a time: they read the secrets again."""

    def revoke_database_logins(self, progress: Progress | None = None) -> list[str]:
        """Every database login but the current one loses its password and sessions; returns them."""
