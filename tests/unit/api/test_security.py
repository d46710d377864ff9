from __future__ import annotations

import time

import jwt
import pytest

from app.api.core.security import (
    InvalidTokenError,
    TokenSigner,
    TokenSubject,
    hash_password,
    verify_password,
)

pytestmark = pytest.mark.unit

CURRENT = "current-key-0123456789abcdef0123456789"
PREVIOUS = "previous-key-0123456789abcdef012345678"


def test_password_hashes_are_argon2id_and_salted() -> None:
    first, second = hash_password("s3cret password"), hash_password("s3cret password")
    assert first.startswith("$argon2id$") and first != second
    assert verify_password("s3cret password", first)
    assert not verify_password("wrong password", first)
    assert not verify_password("s3cret password", "not-a-hash")
    assert not verify_password("s3cret password", None)


def test_tokens_carry_the_user_and_expire() -> None:
    signer = TokenSigner(keys=(CURRENT,), ttl_s=60)
    assert signer.subject_of(signer.issue(42)).user_id == 42
    expired = signer.issue(42, now=time.time() - 120)
    with pytest.raises(InvalidTokenError):
        signer.subject_of(expired)


def test_previous_key_is_accepted_but_never_used_to_sign() -> None:
    old_signer = TokenSigner(keys=(PREVIOUS,), ttl_s=60)
    rotated = TokenSigner(keys=(CURRENT, PREVIOUS), ttl_s=60)
    assert rotated.subject_of(old_signer.issue(7)).user_id == 7
    assert jwt.decode(rotated.issue(7), CURRENT, algorithms=["HS256"])["sub"] == "7"
    with pytest.raises(InvalidTokenError):
        TokenSigner(keys=(CURRENT,), ttl_s=60).subject_of(old_signer.issue(7))


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "abc"},
        {"sub": "0"},
        {"sub": "9223372036854775808"},
        {"sub": 5},
        {"sub": "\u0661\u0662"},  # Arabic-Indic digits are decimal to str.isdecimal
        {},
    ],
)
def test_tokens_with_bad_subjects_are_invalid(claims: dict[str, object]) -> None:
    token = jwt.encode({**claims, "exp": int(time.time()) + 60}, CURRENT, algorithm="HS256")
    with pytest.raises(InvalidTokenError):
        TokenSigner(keys=(CURRENT,), ttl_s=60).subject_of(token)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "e30.e30.", "\x00"])
def test_garbage_is_an_invalid_token_not_a_crash(token: str) -> None:
    with pytest.raises(InvalidTokenError):
        TokenSigner(keys=(CURRENT,), ttl_s=60).subject_of(token)


def test_unsigned_tokens_are_rejected() -> None:
    unsigned = jwt.encode({"sub": "1", "exp": int(time.time()) + 60}, None, algorithm="none")
    with pytest.raises(InvalidTokenError):
        TokenSigner(keys=(CURRENT,), ttl_s=60).subject_of(unsigned)


def test_tokens_carry_the_generation_they_were_issued_in() -> None:
    signer = TokenSigner(keys=(CURRENT,), ttl_s=60)
    assert signer.subject_of(signer.issue(42, generation=3)) == TokenSubject(42, 3)
    # Tokens issued before generations existed are of the first one.
    older = jwt.encode({"sub": "42", "exp": int(time.time()) + 60}, CURRENT, algorithm="HS256")
    assert signer.subject_of(older) == TokenSubject(42, 0)


@pytest.mark.parametrize("generation", [-1, "1", 1.5, True, None])
def test_tokens_with_bad_generations_are_invalid(generation: object) -> None:
    claims = {"sub": "42", "gen": generation, "exp": int(time.time()) + 60}
    with pytest.raises(InvalidTokenError):
        TokenSigner(keys=(CURRENT,), ttl_s=60).subject_of(jwt.encode(claims, CURRENT, "HS256"))
