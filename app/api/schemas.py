"""Request and response bodies. Limits here are what the OpenAPI document tells clients."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

USERNAME_PATTERN = r"^[A-Za-z0-9_]{3,30}$"
POST_MAX_CHARS = 500


def username_key(username: str) -> str:
    """What makes two usernames the same account: NFKC, then case folded (`Alice` is `alice`).

    The database's unique index and lookups use `lower(username COLLATE "C")` (models.User), which
    is the same for every name USERNAME_PATTERN admits (ASCII letters, digits, underscore)."""
    return unicodedata.normalize("NFKC", username).casefold()


def _storable_text(value: str) -> str:
    # PostgreSQL text cannot hold NUL. (Lone surrogates never get here: pydantic rejects them.)
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


Username = Annotated[str, Field(pattern=USERNAME_PATTERN, examples=["alice_42"])]
Password = Annotated[str, Field(min_length=8, max_length=128), AfterValidator(_storable_text)]
DisplayName = Annotated[str, Field(min_length=1, max_length=50), AfterValidator(_storable_text)]
Bio = Annotated[str, Field(max_length=300), AfterValidator(_storable_text)]
MessageText = Annotated[
    str,
    Field(min_length=1, max_length=POST_MAX_CHARS),
    AfterValidator(_storable_text),
    AfterValidator(_not_blank),
]


class StrictBody(BaseModel):
    # Unknown fields are a client bug worth reporting rather than silently dropping.
    model_config = ConfigDict(extra="forbid")


class UserCreate(StrictBody):
    username: Username
    password: Password
    display_name: DisplayName | None = None


class UserUpdate(StrictBody):
    display_name: DisplayName | None = None
    bio: Bio | None = None


class TokenRequest(StrictBody):
    username: Username
    password: Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_storable_text)]


class PostCreate(StrictBody):
    text: MessageText


class CommentCreate(StrictBody):
    text: MessageText


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (the scheme name, not a secret)
    expires_in: int


class Profile(BaseModel):
    username: str
    display_name: str
    bio: str
    created_at: datetime
    followers: int
    following: int
    followed_by_me: bool


class Author(BaseModel):
    username: str
    display_name: str


class PostOut(BaseModel):
    id: int
    author: Author
    text: str
    created_at: datetime
    like_count: int
    comment_count: int
    liked_by_me: bool


class PostPage(BaseModel):
    items: list[PostOut]
    next_cursor: str | None = Field(
        description="Opaque; pass it back as `cursor` for the next page. Null on the last page."
    )


class CommentOut(BaseModel):
    id: int
    post_id: int
    author: Author
    text: str
    created_at: datetime


class ErrorMessage(BaseModel):
    detail: str


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    migration: str | None = None
    reason: str | None = None


class VersionInfo(BaseModel):
    version: str
    git_sha: str
    track: Literal["stable", "canary"]
