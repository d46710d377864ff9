"""What `socialnet-ops status` says of an environment's release, last backup and drift."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from socialnet_ops.control.status import age, recorded_state
from socialnet_ops.core.ledger import Ledger, ReleaseManifest, ReleaseRecord

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (None, "never"),
        ("2026-11-29T11:59:30+00:00", "30 s ago"),
        ("2026-11-29T11:15:00+00:00", "45 min ago"),
        ("2026-11-29T08:48:00+00:00", "3 h 12 min ago"),
        ("2026-11-26T10:00:00+00:00", "3 d 2 h ago"),
        ("2026-11-29T11:00:00", "1 h 0 min ago"),  # naive timestamps are UTC
    ],
)
def test_age_is_said_in_the_largest_units(timestamp: str | None, expected: str) -> None:
    assert age(timestamp, NOW) == expected


def test_a_fresh_environment_has_no_release_no_backup_and_was_never_checked() -> None:
    assert recorded_state(Ledger(environment="local"), None, NOW) == {
        "recorded_release": "none",
        "manifest": "none recorded",
        "last_backup": "never",
        "drift": "never checked",
    }


def test_release_backup_and_drift_with_their_ages() -> None:
    ledger = Ledger(environment="production").with_stable(
        ReleaseRecord(
            version="v2",
            git_sha="a" * 40,
            ref="v2",
            strategy="canary",
            manifest=ReleaseManifest(
                commit="a" * 40,
                source="https://gitlab.example.com/socialnet/socialnet.git",
                app="0123456789abcdef",
                chart="0.4.0@fedcba9876543210",
                secrets={"database": 3, "api": 1},
            ),
        )
    )
    ledger = ledger.model_copy(
        update={
            "last_backup": {
                "id": "20261129T060000Z-abcd",
                "trigger": "scheduled",
                "finished_at": "2026-11-29T06:00:00+00:00",
            }
        }
    )
    drift = {
        "status": "drifted",
        "addresses": ["module.dns.aws_route53_record.apex"],
        "checked_at": "2026-11-29T11:30:00+00:00",
    }
    assert recorded_state(ledger, drift, NOW) == {
        "recorded_release": f"v2 ({'a' * 12})",
        "manifest": (
            f"commit {'a' * 40}; source https://gitlab.example.com/socialnet/socialnet.git; "
            "app 0123456789abcdef; chart 0.4.0@fedcba9876543210; secrets api v1, database v3"
        ),
        "last_backup": "20261129T060000Z-abcd (scheduled), 6 h 0 min ago",
        "drift": "drifted (1 address(es)), checked 30 min ago",
    }
