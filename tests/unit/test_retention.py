"""Grandfather-father-son retention over a synthetic calendar of backups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from socialnet_ops.core.environments import Retention
from socialnet_ops.core.retention import BackupPoint, plan_retention

pytestmark = pytest.mark.unit

START = datetime(2025, 1, 1, 3, 0, tzinfo=UTC)  # a Wednesday


def calendar(days: int, per_day: int = 1, start: datetime = START) -> list[BackupPoint]:
    """One backup every 24/per_day hours for `days` days."""
    step = timedelta(hours=24 / per_day)
    return [
        BackupPoint(id=f"b{index:04d}", taken_at=start + index * step)
        for index in range(days * per_day)
    ]


def test_a_year_of_daily_backups_keeps_7_daily_4_weekly_12_monthly() -> None:
    backups = calendar(365)
    plan = plan_retention(backups, Retention(daily=7, weekly=4, monthly=12))
    kept = [point for point in backups if point.id in plan.keep]
    newest = backups[-1].taken_at
    daily = {point.taken_at.date() for point in kept if newest - point.taken_at < timedelta(days=7)}
    assert len(daily) == 7
    weeks = {point.taken_at.isocalendar()[:2] for point in kept}
    assert len(weeks) >= 4
    months = {(point.taken_at.year, point.taken_at.month) for point in kept}
    assert len(months) == 12
    # Every monthly keeper is the newest backup of its month.
    for reasons_id, reasons in plan.keep.items():
        point = next(point for point in backups if point.id == reasons_id)
        if any(reason.startswith("monthly") for reason in reasons):
            same_month = [
                other
                for other in backups
                if (other.taken_at.year, other.taken_at.month)
                == (point.taken_at.year, point.taken_at.month)
            ]
            assert point == max(same_month, key=lambda other: other.taken_at)
    assert len(plan.keep) + len(plan.delete) == 365
    assert len(plan.keep) <= 7 + 4 + 12


def test_hourly_backups_keep_the_newest_of_each_day() -> None:
    backups = calendar(10, per_day=24)
    plan = plan_retention(backups, Retention(daily=7, weekly=0, monthly=0))
    kept = sorted((point for point in backups if point.id in plan.keep), key=lambda p: p.taken_at)
    assert len(kept) == 7
    # The 23:00 backup closes each day; the last day (still running) keeps its latest so far.
    assert all(point.taken_at.hour == 23 for point in kept[:-1])
    assert kept[-1] == backups[-1]


def test_the_newest_backup_is_never_deleted_even_by_a_policy_that_keeps_nothing_recent() -> None:
    backups = calendar(3)
    plan = plan_retention(backups, Retention(daily=0, weekly=0, monthly=1))
    assert backups[-1].id in plan.keep
    assert "newest backup" in plan.keep[backups[-1].id]
    assert backups[-1].id not in plan.delete_ids


def test_stopped_backups_are_not_aged_out_by_the_calendar_alone() -> None:
    """Periods without backups do not count: old backups survive a long outage."""
    old = calendar(30, start=START)
    plan = plan_retention(old, Retention(daily=7, weekly=0, monthly=0))
    assert len(plan.keep) == 7  # the 7 newest days that have backups, however old they are


def test_recent_predeploy_backups_are_kept_beyond_the_gfs_rules() -> None:
    day = START
    backups = [
        BackupPoint("s1", day),
        BackupPoint("p1", day + timedelta(hours=1), trigger="pre-deploy", release="v1"),
        BackupPoint("p2", day + timedelta(hours=2), trigger="pre-deploy", release="v2"),
        BackupPoint("s2", day + timedelta(hours=3)),
    ]
    rules = Retention(daily=1, weekly=0, monthly=0, on_demand_days=0)  # the count rule alone
    plan = plan_retention(backups, rules, keep_predeploy=1)
    assert set(plan.keep) == {"s2", "p2"}
    assert plan.keep["p2"] == ["pre-deploy backup of v2"]
    assert plan.delete_ids == ["s1", "p1"]  # oldest first


def test_the_plan_is_a_dry_run_it_deletes_nothing_by_itself() -> None:
    backups = calendar(20)
    before = list(backups)
    plan = plan_retention(backups, Retention(daily=3, weekly=0, monthly=0))
    assert backups == before
    assert len(plan.delete) == 17
    assert plan.summary()[0].startswith("keep b0019: newest backup, daily")
    assert plan.summary()[-1] == "delete b0016"


def test_no_backups_means_nothing_to_do_and_naive_times_are_refused() -> None:
    assert plan_retention([], Retention()).delete == []
    with pytest.raises(ValueError, match="no time zone"):
        plan_retention([BackupPoint("x", datetime(2025, 1, 1))], Retention())


def test_a_manual_backup_is_not_replaced_by_the_next_scheduled_backup_of_the_same_day() -> None:
    backups = [
        BackupPoint("s-0300", START),
        BackupPoint("m-1000", START + timedelta(hours=7), trigger="manual"),
        BackupPoint("s-2300", START + timedelta(hours=20)),
    ]
    plan = plan_retention(backups, Retention())
    assert plan.keep["m-1000"] == ["manual backup, kept 7 days (to 2025-01-08 10:00Z)"]
    assert plan.delete_ids == ["s-0300"]  # GFS still keeps one scheduled backup per day


def test_pre_deploy_backups_beyond_the_newest_few_are_kept_for_their_days() -> None:
    """Five deploys in a day: the two oldest pre-deploy backups are not among the newest three,
    and a scheduled backup of the same day is newer; their own retention keeps them."""
    backups = [
        BackupPoint(
            f"p{hour}", START + timedelta(hours=hour), trigger="pre-deploy", release=f"v{hour}"
        )
        for hour in range(1, 6)
    ] + [BackupPoint("s", START + timedelta(hours=12))]
    plan = plan_retention(backups, Retention(daily=7, weekly=4, monthly=12), keep_predeploy=3)
    assert plan.delete_ids == []
    assert plan.keep["p1"] == ["pre-deploy backup, kept 7 days (to 2025-01-08 04:00Z)"]
    assert plan.keep["p5"][-1] == "pre-deploy backup of v5"


def test_on_demand_backups_age_out_after_their_days_counted_from_the_newest_backup() -> None:
    newest = START + timedelta(days=10)
    backups = [
        BackupPoint("m-old", newest - timedelta(days=7, hours=1), trigger="manual"),
        BackupPoint("m-recent", newest - timedelta(days=6, hours=23), trigger="manual"),
        BackupPoint("s-recent", newest - timedelta(days=6, hours=22)),  # that day's keeper
        BackupPoint("s-newest", newest),
    ]
    plan = plan_retention(backups, Retention(daily=7, weekly=0, monthly=0, on_demand_days=7))
    assert plan.delete_ids == ["m-old"]
    assert "m-recent" in plan.keep
    # 0 days: on-demand backups are kept only by the rules, as scheduled ones are.
    plan = plan_retention(backups, Retention(daily=7, weekly=0, monthly=0, on_demand_days=0))
    assert plan.delete_ids == ["m-old", "m-recent"]


def test_the_on_demand_retention_is_a_policy_setting_with_a_default() -> None:
    assert Retention().on_demand_days == 7
    assert Retention.model_validate({"daily": 7, "on_demand_days": 2}).on_demand_days == 2
    with pytest.raises(ValidationError, match="on_demand_days"):
        Retention.model_validate({"on_demand_days": -1})
