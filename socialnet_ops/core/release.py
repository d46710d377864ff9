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
    # What the build's commit holds, per layer (app, chart, values:<file>, ansible_roles,
    # alembic_head): the build-time part of the release manifest.
    digests: dict[str, str] = field(default_factory=dict)
    source: str = ""  # the repository it was built from, without credentials

    @property
    def commit(self) -> str | None:
        """The commit it was built from; None for a build of the working tree."""
        return None if self.git_sha.startswith("worktree-") else self.git_sha


@dataclass(frozen=True)
class SourceTree:
    """The files a run reads: one commit's read-only tree, or the working tree (`sha` None)."""

    root: Path
    sha: str | None
    ref: str
    url: str

    def describe(self) -> str:
        if self.sha is None:
            return f"the working tree of {self.url} (no commit)"
        shown = self.ref if self.ref == self.sha else f"{self.ref} = {self.sha[:12]}"
        return f"commit {shown} of {self.url}"
