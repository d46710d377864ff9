"""The canary's step table and progress bar, as a person follows them in the Prefect UI. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field

from socialnet_ops.core.canary import PlannedStep, StepRow, progress_percent
from socialnet_ops.core.results import artifact_key


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


@dataclass
class CanaryReport:
    """The step table (one row per step and per measurement) and the progress bar's texts."""

    environment: str
    version: str
    steps: list[PlannedStep]
    rows: list[dict[str, str]] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"Canary {self.version} on {self.environment}"

    @property
    def table_key(self) -> str:
        return artifact_key("canary", self.environment)

    @property
    def progress_key(self) -> str:
        return artifact_key("canary-progress", self.environment)

    def progress(self, done_steps: int, what: str) -> tuple[float, str]:
        """The progress bar at `what`, `done_steps` steps behind it: percent and description."""
        return progress_percent(done_steps, len(self.steps)), f"{self.title}: {what}"

    def finished(self, what: str) -> str:
        """The progress bar's description once the canary is promoted or aborted."""
        return f"Canary {self.version}: {what}"

    def add(self, row: StepRow) -> list[dict[str, str]]:
        """The table with one more row."""
        measurement = row.measurement
        canary = measurement.canary if measurement else None
        stable = measurement.stable if measurement else None
        self.rows.append(
            {
                "step": row.step.title if row.step else "promotion",
                "weight": f"{row.weight}%",
                "canary requests": _count(canary.requests if canary else None),
                "stable requests": _count(stable.requests if stable else None),
                "canary errors": _ratio(canary.error_ratio if canary else None),
                "stable errors": _ratio(stable.error_ratio if stable else None),
                "canary p95": _ms(canary.p95 if canary else None),
                "stable p95": _ms(stable.p95 if stable else None),
                "canary p99": _ms(canary.p99 if canary else None),
                "stable p99": _ms(stable.p99 if stable else None),
                "verdict": row.verdict,
                "why": row.why,
            }
        )
        return self.rows
