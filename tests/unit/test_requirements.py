"""A test's missing tool: a skip on a developer's machine, a failure in CI."""

from __future__ import annotations

import pytest
from _pytest.outcomes import Failed, Skipped

from tests.support.requirements import running_in_ci, unavailable

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("value", ["", "0", "false", "No"])
def test_outside_ci_a_missing_tool_skips_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CI", value)
    assert not running_in_ci()
    with pytest.raises(Skipped, match="helm is not on PATH"):
        unavailable("helm is not on PATH")


@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_in_ci_a_missing_tool_fails_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(Failed, match="helm is not on PATH"):
        unavailable("helm is not on PATH")
