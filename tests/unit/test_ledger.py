from __future__ import annotations

import pytest

from socialnet_ops.core.ledger import HISTORY_LIMIT, CanaryRecord, Ledger, ReleaseRecord

pytestmark = pytest.mark.unit


def release(version: str) -> ReleaseRecord:
    return ReleaseRecord(version=version, git_sha=f"sha-{version}", ref="main", strategy="rolling")


def test_a_new_stable_pushes_the_old_one_into_history_and_clears_the_canary() -> None:
    ledger = Ledger(environment="local").with_stable(release("v1"))
    ledger = ledger.with_canary(CanaryRecord(version="v2", weight=10)).with_stable(release("v2"))
    assert ledger.stable is not None and ledger.stable.version == "v2"
    assert [record.version for record in ledger.history] == ["v1"]
    assert ledger.canary is None


def test_previous_skips_entries_of_the_release_serving_now() -> None:
    ledger = Ledger(environment="local")
    for version in ("v1", "v2", "v1"):  # v1, then v2, then back to v1
        ledger = ledger.with_stable(release(version))
    previous = ledger.previous()
    assert previous is not None and previous.version == "v2"
    assert Ledger(environment="local").previous() is None


def test_history_is_bounded_so_the_ledger_fits_a_prefect_variable() -> None:
    ledger = Ledger(environment="production")
    for number in range(HISTORY_LIMIT + 10):
        ledger = ledger.with_stable(release(f"v{number}"))
    assert len(ledger.history) == HISTORY_LIMIT
    assert len(ledger.model_dump_json()) < 5000
    assert ledger.find("v0") is None and ledger.find(f"v{HISTORY_LIMIT + 9}") is not None


def test_the_ledger_survives_a_json_round_trip() -> None:
    ledger = Ledger(environment="local").with_stable(release("v1")).with_stable(release("v2"))
    assert Ledger.model_validate(ledger.model_dump(mode="json")) == ledger
