"""The local platform's state: `.local/<env>/state.json`, written atomically under a file lock."""

from __future__ import annotations

import fcntl
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from pydantic import BaseModel, Field, ValidationError

from socialnet_ops.core.ledger import CanaryRecord, ControlRequest
from socialnet_ops.platforms.base import Build, PlatformError, Track
from socialnet_ops.platforms.local.tools import write_atomic

# The long-lived programs every environment runs, with the port each one listens on.
BASE_PORTS = (
    "edge", "exporter", "front", "postgres", "prometheus", "moto", "openbao", "registry",
    "s3tls", "pushgateway",
)  # fmt: skip


class BuildRecord(BaseModel):
    version: str
    git_sha: str
    ref: str
    path: str | None = None
    runtime_env: dict[str, str] = Field(default_factory=dict)
    images: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def of(cls, build: Build) -> BuildRecord:
        return cls(
            version=build.version,
            git_sha=build.git_sha,
            ref=build.ref,
            path=str(build.path) if build.path else None,
            runtime_env=dict(build.runtime_env),
            images=dict(build.images),
        )

    def to_build(self) -> Build:
        return Build(
            version=self.version,
            git_sha=self.git_sha,
            ref=self.ref,
            path=Path(self.path) if self.path else None,
            runtime_env=dict(self.runtime_env),
            images=dict(self.images),
        )


class Replica(BaseModel):
    program: str  # supervisord program name
    port: int
    slot: str  # HAProxy server of backend `api` (stableN / canaryN)
    track: Track
    version: str
    # In the HAProxy rotation (counted in the weights); False while starting or draining.
    enabled: bool = False


class TrackState(BaseModel):
    build: BuildRecord | None = None  # the build the track runs once its rollout completed
    replicas: list[Replica] = Field(default_factory=list)


class PlatformState(BaseModel):
    environment: str
    ports: dict[str, int] = Field(default_factory=dict)
    stable: TrackState = Field(default_factory=TrackState)
    canary: TrackState = Field(default_factory=TrackState)
    canary_weight: int = 0
    # Where the canary in flight stands and a promote/abort request for its run; both go with it.
    canary_record: CanaryRecord | None = None
    canary_request: ControlRequest | None = None
    # The image the front runs (None: the static server of the working tree).
    front_image: str | None = None
    # Offset of supervisord.log when each program was added: its restarts are counted after it.
    log_offsets: dict[str, int] = Field(default_factory=dict)

    def track(self, track: Track) -> TrackState:
        return self.stable if track == "stable" else self.canary

    def replicas(self) -> list[Replica]:
        return [*self.stable.replicas, *self.canary.replicas]

    def taken_ports(self) -> set[int]:
        return set(self.ports.values()) | {replica.port for replica in self.replicas()}


class StateStore:
    """Reads and writes one environment's state file; `locked()` serializes whole operations."""

    def __init__(self, state_dir: Path, environment: str) -> None:
        self.path = state_dir / "state.json"
        self.lock_path = state_dir / "state.lock"
        self.environment = environment
        # Re-entrant within this process (an operation may call another), exclusive across them.
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._handle: IO[str] | None = None

    def load(self) -> PlatformState:
        if not self.path.exists():
            return PlatformState(environment=self.environment)
        try:
            return PlatformState.model_validate(json.loads(self.path.read_text()))
        except (ValueError, ValidationError) as error:
            raise PlatformError(f"{self.path}: unreadable platform state: {error}") from None

    def save(self, state: PlatformState) -> None:
        write_atomic(self.path, state.model_dump_json(indent=2) + "\n")

    @contextmanager
    def locked(self) -> Iterator[None]:
        """An exclusive lock held for a whole operation; concurrent operations wait their turn."""
        with self._thread_lock:
            if self._depth == 0:
                self.lock_path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = self.lock_path.open("a")
                fcntl.flock(self._handle, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._handle is not None:
                    fcntl.flock(self._handle, fcntl.LOCK_UN)
                    self._handle.close()
                    self._handle = None
