from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.api.schemas import PostCreate, UserCreate, UserUpdate, username_key

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text", ["a", "x" * 500, "emoji 🎉" * 50, "<script>alert(1)</script>"])
def test_storable_post_texts_are_accepted(text: str) -> None:
    assert PostCreate(text=text).text == text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "at least 1 character"),
        ("x" * 501, "at most 500 characters"),
        ("a\x00b", "NUL"),
        ("\ud83d", "unicode string"),
        ("  \t ", "blank"),
    ],
)
def test_unstorable_post_texts_are_rejected_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        PostCreate(text=text)


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="extra"):
        UserCreate.model_validate({"username": "abc", "password": "password1", "is_admin": True})


def test_profile_update_fields_are_optional() -> None:
    assert UserUpdate().model_dump(exclude_unset=True) == {}


@pytest.mark.parametrize(
    ("typed", "key"),
    [
        ("Alice_42", "alice_42"),
        ("ALICE_42", "alice_42"),
        ("\uff21lice", "alice"),  # fullwidth A: NFKC makes it ASCII
        ("Stra\u00dfe", "strasse"),  # casefold, not lower: \u00df is "ss"
    ],
)
def test_usernames_are_compared_as_nfkc_case_folded(typed: str, key: str) -> None:
    assert username_key(typed) == key
