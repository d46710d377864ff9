"""Grandfather-father-son retention: which backups a policy keeps, and why. Pure; no I/O.

Each rule walks the backups newest first and keeps the newest backup of each of its N most recent
periods that *have* a backup (days, ISO weeks, months, in UTC), as restic and pgBackRest do: when
backups stop for a while, the old ones are not aged out by the calendar alone. On top of the rules:

- the newest backup is always kept, whatever the policy says;
- a manual or pre-deploy backup is kept for `on_demand_days` days whatever the rules pick:
  someone asked for that one (before a risky change, or a deploy names it in its report), so the
  next scheduled backup of the same day must not replace it. Its age is counted from the newest
  backup, not from the clock, so an outage does not age it out either;
- the newest `keep_predeploy` pre-deploy backups are kept however old (the releases they precede
  may still be the ones a rollback returns to).

Only complete backups (those with a manifest) are ever given to this module; a half-written
object is not a backup and never appears here.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

PREDEPLOY_KEEP = 3
ON_DEMAND_TRIGGERS = ("manual", "pre-deploy")


class RetentionRules(Protocol):
    @property
    def daily(self) -> int: ...

    @property
    def weekly(self) -> int: ...

    @property
    def monthly(self) -> int: ...

    @property
    def on_demand_days(self) -> int: ...


@dataclass(frozen=True)
class BackupPoint:
    """One complete backup as retention sees it."""

    id: str
    taken_at: datetime
    trigger: str = "scheduled"  # scheduled | pre-deploy | manual
    release: str | None = None


@dataclass(frozen=True)
class RetentionPlan:
    keep: dict[str, list[str]] = field(default_factory=dict)  # backup id -> why it stays
    delete: list[BackupPoint] = field(default_factory=list)  # oldest first

    @property
    def delete_ids(self) -> list[str]:
        return [point.id for point in self.delete]

    def summary(self) -> list[str]:
        kept = [
            f"keep {backup_id}: {', '.join(reasons)}" for backup_id, reasons in self.keep.items()
        ]
        return kept + [f"delete {point.id}" for point in self.delete]


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"backup time {moment.isoformat()} has no time zone; use UTC times")
    return moment.astimezone(UTC)


_PERIODS: dict[str, Callable[[datetime], Hashable]] = {
    "daily": lambda moment: moment.date(),
    "weekly": lambda moment: moment.isocalendar()[:2],
    "monthly": lambda moment: (moment.year, moment.month),
}


def _label(rule: str, moment: datetime) -> str:
    if rule == "daily":
        return f"daily {moment:%Y-%m-%d}"
    if rule == "weekly":
        year, week, _ = moment.isocalendar()
        return f"weekly {year}-W{week:02d}"
    return f"monthly {moment:%Y-%m}"


def plan_retention(
    backups: Iterable[BackupPoint],
    rules: RetentionRules,
    keep_predeploy: int = PREDEPLOY_KEEP,
) -> RetentionPlan:
    """What to keep (with the reasons) and what to delete, for complete backups of one database."""
    newest_first = sorted(backups, key=lambda point: (_utc(point.taken_at), point.id), reverse=True)
    if not newest_first:
        return RetentionPlan()
    reasons: dict[str, list[str]] = {point.id: [] for point in newest_first}
    reasons[newest_first[0].id].append("newest backup")
    for rule, period_of in _PERIODS.items():
        wanted = getattr(rules, rule)
        seen: set[Hashable] = set()
        for point in newest_first:
            if len(seen) >= wanted:
                break
            moment = _utc(point.taken_at)
            period = period_of(moment)
            if period not in seen:
                seen.add(period)
                reasons[point.id].append(_label(rule, moment))
    newest = _utc(newest_first[0].taken_at)
    on_demand_age = timedelta(days=rules.on_demand_days)
    for point in newest_first:
        taken = _utc(point.taken_at)
        if point.trigger in ON_DEMAND_TRIGGERS and newest - taken < on_demand_age:
            until = f"{taken + on_demand_age:%Y-%m-%d %H:%M}Z"
            reasons[point.id].append(
                f"{point.trigger} backup, kept {rules.on_demand_days} days (to {until})"
            )
    predeploy = [point for point in newest_first if point.trigger == "pre-deploy"]
    for point in predeploy[:keep_predeploy]:
        reasons[point.id].append(f"pre-deploy backup of {point.release or 'a release'}")
    keep = {point.id: reasons[point.id] for point in newest_first if reasons[point.id]}
    delete = [point for point in reversed(newest_first) if not reasons[point.id]]
    return RetentionPlan(keep=keep, delete=delete)
