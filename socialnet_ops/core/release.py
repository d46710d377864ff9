"""What a release is, whatever platform runs it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Build:
    """A release of the app: code at a git ref, stored once and reused by reruns and rollbacks."""

    version: str
    git_sha: str
    ref: str
    # Local platform: the folder holding the release's code; Kubernetes: None.
    path: Path | None = None
    # Kubernetes: the image references; local: empty.
    images: dict[str, str] = field(default_factory=dict)
    # Extra, non-secret runtime settings baked into the build (e.g. fault injection for drills).
    runtime_env: dict[str, str] = field(default_factory=dict)
