"""Password hashing (argon2) and signed, expiring access tokens (HS256 with key rotation)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP's argon2id baseline (19 MiB, 2 passes, 1 lane): ~0.1 s a hash here, so a burst of
# logins cannot exhaust a small replica the way the 64 MiB x 4 lanes default can.
_password_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verifying against a real hash when the user does not exist keeps login time uniform.
_UNKNOWN_USER_HASH = _password_hasher.hash("unknown-user-timing-equaliser")
_ALGORITHM = "HS256"
# Identifiers are PostgreSQL bigint; anything larger can never name a row.
MAX_ID = 2**63 - 1


def hash_password(password: str) -> str:
    return _password_hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    try:
        matched = _password_hasher.verify(password_hash or _UNKNOWN_USER_HASH, password)
    except (VerificationError, InvalidHashError):
        return False
    return matched and password_hash is not None


class InvalidTokenError(Exception):
    """The token is malformed, tampered with, signed by an unknown key or expired."""


@dataclass(frozen=True)
class TokenSubject:
    user_id: int
    # The user's token generation when it was issued; logging out moves the user's on, which
    # revokes every token issued before. Tokens from before generations existed carry none: 0.
    generation: int


@dataclass(frozen=True)
class TokenSigner:
    """Signs with the first key; accepts any of the keys (current, then previous)."""

    keys: tuple[str, ...]
    ttl_s: int

    def issue(self, user_id: int, generation: int = 0, now: float | None = None) -> str:
        issued_at = int(time.time() if now is None else now)
        claims = {
            "sub": str(user_id),
            "gen": generation,
            "iat": issued_at,
            "exp": issued_at + self.ttl_s,
        }
        return jwt.encode(claims, self.keys[0], algorithm=_ALGORITHM)

    def subject_of(self, token: str) -> TokenSubject:
        for key in self.keys:
            try:
                claims = jwt.decode(
                    token, key, algorithms=[_ALGORITHM], options={"require": ["sub", "exp"]}
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as error:
                raise InvalidTokenError(str(error)) from error
            subject = claims["sub"]
            if not (isinstance(subject, str) and subject.isascii() and subject.isdecimal()):
                raise InvalidTokenError("subject is not a user id")
            user_id = int(subject)
            if not 0 < user_id <= MAX_ID:
                raise InvalidTokenError("subject is not a user id")
            generation = claims.get("gen", 0)
            if type(generation) is not int or generation < 0:
                raise InvalidTokenError("token generation is not a non-negative integer")
            return TokenSubject(user_id=user_id, generation=generation)
        raise InvalidTokenError("signature does not match any accepted key")
