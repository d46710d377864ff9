"""The release ledger: what serves in an environment, what served before, what is in flight.

Pure data; where it is stored (Prefect Variables, so every worker sees the same) is the tasks' job.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Prefect Variables hold at most 5,000 characters; this many previous releases fit comfortably,
# with the manifests of the newest MANIFESTS_KEPT of them (older builds keep theirs in build.json).
HISTORY_LIMIT = 10
MANIFESTS_KEPT = 2

Strategy = Literal["rolling", "canary", "blue_green", "rollback"]


class ReleaseManifest(BaseModel):
    """What one release put in place, in every layer (Kargo's "freight"): enough to say what
    changed between two releases and to return to one. Digests are sha256 prefixes; secret
    versions are Vault KV versions, never values."""

    model_config = ConfigDict(frozen=True)

    commit: str | None = None  # None: built from the working tree
    source: str  # the repository, without credentials
    app: str  # digest of app/
    chart: str | None = None  # "<chart version>@<digest>"
    values: str | None = None  # digest of the environment's values file
    rendered: str | None = None  # digest of the manifests Helm rendered (Kubernetes)
    terraform: str | None = None  # "serial <n>, code <digest>, commit <sha>" of the last apply
    ansible_roles: str | None = None
    alembic_head: str | None = None
    secrets: dict[str, int] = Field(default_factory=dict)
    backup_id: str | None = None  # the pre-deploy backup
    # component -> registry/repository@sha256:... of the images the release runs
    images: dict[str, str] = Field(default_factory=dict)

    def rows(self) -> list[tuple[str, str]]:
        """(layer, what) for a table: every field, `-` when unknown."""
        shown = self.model_dump(exclude={"secrets", "images"})
        shown["secrets"] = ", ".join(f"{name} v{v}" for name, v in sorted(self.secrets.items()))
        for component, reference in sorted(self.images.items()):
            shown[f"image:{component}"] = reference
        return [
            (key, str(value) if value not in (None, "") else "-") for key, value in shown.items()
        ]


def release_manifest(
    commit: str | None,
    source: str,
    digests: dict[str, str],
    values_file: str | None,
    infra: dict[str, Any] | None,
    secrets: dict[str, int],
    backup_id: str | None,
    rendered: str | None = None,
    images: dict[str, str] | None = None,
) -> ReleaseManifest:
    """The manifest of a release, from its build's digests and what serves around it."""
    terraform = None
    if infra and infra.get("serial") is not None:
        applied = infra.get("commit") or "the working tree"
        terraform = (
            f"serial {infra['serial']}, code {infra.get('stack_digest') or '-'}, "
            f"commit {applied[:12]}"
        )
    values = digests.get(f"values:{Path(values_file).name}") if values_file else None
    return ReleaseManifest(
        commit=commit,
        source=source,
        app=digests.get("app", "-"),
        chart=digests.get("chart"),
        values=values,
        rendered=rendered,
        terraform=terraform,
        ansible_roles=digests.get("ansible_roles"),
        alembic_head=digests.get("alembic_head"),
        secrets=secrets,
        backup_id=backup_id,
        images=dict(images or {}),
    )


class ReleaseRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: str
    git_sha: str
    ref: str
    strategy: Strategy
    deployed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    flow_run_id: str | None = None
    backup_id: str | None = None
    manifest: ReleaseManifest | None = None


# A canary in flight: walking its steps, held at a gate, being promoted, being aborted. A finished
# canary has no record (the platform drops it with the canary track).
CanaryStatus = Literal["progressing", "paused", "promoting", "aborting"]
ControlAction = Literal["promote", "abort"]


class ControlRequest(BaseModel):
    """ "Promote now" (`promote --full`) or "abort now", asked by someone, for the running canary."""

    model_config = ConfigDict(frozen=True)

    action: ControlAction
    by: str
    reason: str
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def said(self) -> str:
        return f"{self.action} requested by {self.by}: {self.reason}"


class CanaryRecord(BaseModel):
    """The canary in flight, stored with it by the platform (and in the ledger): a run that finds
    one left by a dead run knows where it stood (`step` steps done, at `weight`)."""

    model_config = ConfigDict(frozen=True)

    version: str
    weight: int
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    flow_run_id: str | None = None
    step: int = 0  # steps done; the walk resumes at steps[step]
    status: CanaryStatus = "progressing"


class Ledger(BaseModel):
    model_config = ConfigDict(frozen=True)

    environment: str
    stable: ReleaseRecord | None = None
    history: list[ReleaseRecord] = Field(default_factory=list)  # earlier stables, newest first
    canary: CanaryRecord | None = None
    last_backup: dict[str, str] | None = None

    def with_stable(self, record: ReleaseRecord) -> Ledger:
        """`record` serves now; the release it replaces becomes the newest of the history."""
        history = [self.stable, *self.history] if self.stable else list(self.history)
        history = [
            item if index < MANIFESTS_KEPT else item.model_copy(update={"manifest": None})
            for index, item in enumerate(history[:HISTORY_LIMIT])
        ]
        return self.model_copy(update={"stable": record, "history": history, "canary": None})

    def with_canary(self, canary: CanaryRecord | None) -> Ledger:
        return self.model_copy(update={"canary": canary})

    def previous(self) -> ReleaseRecord | None:
        """The newest earlier release that differs from what serves now."""
        current = self.stable.version if self.stable else None
        return next((record for record in self.history if record.version != current), None)

    def find(self, version: str) -> ReleaseRecord | None:
        records = [self.stable, *self.history] if self.stable else self.history
        return next((record for record in records if record.version == version), None)
