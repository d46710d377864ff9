"""The release ledger: what serves in an environment, what served before, what is in flight.

Pure data; where it is stored (Prefect Variables, so every worker sees the same) is the tasks' job.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Prefect Variables hold at most 5,000 characters; this many previous releases fit comfortably.
HISTORY_LIMIT = 12

Strategy = Literal["rolling", "canary", "rollback"]


class ReleaseRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: str
    git_sha: str
    ref: str
    strategy: Strategy
    deployed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    flow_run_id: str | None = None
    backup_id: str | None = None


class CanaryRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: str
    weight: int
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    flow_run_id: str | None = None


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
        return self.model_copy(
            update={"stable": record, "history": history[:HISTORY_LIMIT], "canary": None}
        )

    def with_canary(self, canary: CanaryRecord | None) -> Ledger:
        return self.model_copy(update={"canary": canary})

    def previous(self) -> ReleaseRecord | None:
        """The newest earlier release that differs from what serves now."""
        current = self.stable.version if self.stable else None
        return next((record for record in self.history if record.version != current), None)

    def find(self, version: str) -> ReleaseRecord | None:
        records = [self.stable, *self.history] if self.stable else self.history
        return next((record for record in records if record.version == version), None)
