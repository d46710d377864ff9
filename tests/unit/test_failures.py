"""What a failed run means: rejected (nothing changed) or failed, judged from its exception."""

from __future__ import annotations

import pickle

import pytest

from socialnet_ops.core.failures import (
    RejectedError,
    before_any_change,
    changed_nothing,
    mark_unchanged,
    one_line,
)

pytestmark = pytest.mark.unit


def test_an_error_inside_before_any_change_keeps_its_type_and_is_marked() -> None:
    with pytest.raises(KeyError) as raised, before_any_change():
        raise KeyError("no such version")
    assert changed_nothing(raised.value)


def test_the_mark_survives_pickling_as_prefect_persists_results() -> None:
    error = mark_unchanged(ValueError("bad ref"))
    assert changed_nothing(pickle.loads(pickle.dumps(error)))  # noqa: S301 - our own bytes


def test_marking_twice_adds_one_note() -> None:
    error = mark_unchanged(mark_unchanged(ValueError("x")))
    assert len(error.__notes__) == 1


def test_an_error_after_changes_is_not_a_rejection() -> None:
    assert not changed_nothing(RuntimeError("smoke test failed"), "Flow run encountered ...")
    assert not changed_nothing(None, None)


def test_rejected_errors_and_invalid_parameters_changed_nothing() -> None:
    assert changed_nothing(RejectedError("nothing to roll back"))
    assert changed_nothing(None, "Validation of flow parameters failed: invalid parameters")


def test_one_line_keeps_the_first_line_and_prefects_parameter_field() -> None:
    assert one_line(ValueError("first\nsecond")) == "first"
    assert one_line(ValueError()) == "ValueError"
    invalid = ValueError(
        "Flow run received invalid parameters:\n - point_in_time: Input should be a valid datetime"
    )
    assert one_line(invalid) == (
        "Flow run received invalid parameters: point_in_time: Input should be a valid datetime"
    )
