"""A lock taken again inside its own hold is already held; outside it, it is free again."""

from __future__ import annotations

import contextvars

import pytest

from socialnet_ops.core.holds import Holds

pytestmark = pytest.mark.unit


def test_a_hold_covers_its_block_and_contexts_copied_from_it() -> None:
    holds = Holds("test_holds")
    assert not holds.holds("staging")
    with holds.holding("staging"):
        assert holds.holds("staging") and not holds.holds("production")
        # A task or subflow runs in a copy of the caller's context: it sees the hold.
        assert contextvars.copy_context().run(holds.holds, "staging")
    assert not holds.holds("staging")


def test_the_hold_ends_even_when_the_block_fails() -> None:
    holds = Holds("test_holds_failing")
    with pytest.raises(RuntimeError), holds.holding("staging"):
        raise RuntimeError("deploy failed")
    assert not holds.holds("staging")
