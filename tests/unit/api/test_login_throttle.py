from __future__ import annotations

import pytest

from app.api.core.login_throttle import LoginThrottle, TooManyFailedLoginsError

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(throttle: LoginThrottle, account: str, address: str = "192.0.2.1") -> None:
    with throttle.attempt(account, address) as attempt:
        attempt.fail()


def retry_after(throttle: LoginThrottle, account: str, address: str = "192.0.2.1") -> int:
    with pytest.raises(TooManyFailedLoginsError) as refused, throttle.attempt(account, address):
        pass
    return refused.value.retry_after_s


def test_an_account_is_held_back_until_its_oldest_failure_leaves_the_window() -> None:
    clock = Clock()
    throttle = LoginThrottle(per_account=3, per_address=100, window_s=60, clock=clock)
    for _ in range(3):
        fail(throttle, "alice")
        clock.now += 10
    assert retry_after(throttle, "alice") == 30  # failures at 0, 10, 20 s; now 30 s
    clock.now += 30
    with throttle.attempt("alice", "192.0.2.1"):
        pass  # the first failure has left the window


def test_successes_are_not_counted() -> None:
    throttle = LoginThrottle(per_account=2, per_address=2, window_s=60, clock=Clock())
    for _ in range(10):
        with throttle.attempt("alice", "192.0.2.1"):
            pass
    fail(throttle, "alice")
    with throttle.attempt("alice", "192.0.2.1"):
        pass


def test_an_address_is_held_back_across_accounts_and_others_are_not() -> None:
    throttle = LoginThrottle(per_account=100, per_address=3, window_s=60, clock=Clock())
    for account in ("alice", "bob", "carol"):
        fail(throttle, account)
    assert retry_after(throttle, "dave") == 60
    with throttle.attempt("dave", "192.0.2.2"):
        pass


def test_attempts_being_verified_hold_their_slots() -> None:
    """A burst of parallel guesses cannot all pass before the first failure is counted."""
    throttle = LoginThrottle(per_account=2, per_address=100, window_s=60, clock=Clock())
    with throttle.attempt("alice", "192.0.2.1"), throttle.attempt("alice", "192.0.2.2"):
        assert retry_after(throttle, "alice", "192.0.2.3") == 1
    # Both succeeded: their slots are free again.
    with throttle.attempt("alice", "192.0.2.3"):
        pass


def test_an_error_while_verifying_is_not_a_failure() -> None:
    throttle = LoginThrottle(per_account=1, per_address=100, window_s=60, clock=Clock())
    with pytest.raises(ConnectionError), throttle.attempt("alice", "192.0.2.1"):
        raise ConnectionError("database unavailable")
    with throttle.attempt("alice", "192.0.2.1"):
        pass
