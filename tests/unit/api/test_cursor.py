from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.api.core.cursor import Cursor

pytestmark = pytest.mark.unit


@given(
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5, minutes=-30))])),
    st.integers(min_value=1, max_value=2**63 - 1),
)
def test_a_cursor_survives_the_round_trip(created_at: datetime, post_id: int) -> None:
    cursor = Cursor(created_at=created_at, id=post_id)
    token = cursor.encode()
    assert token.isascii() and "=" not in token
    assert Cursor.decode(token) == cursor


@given(st.text(max_size=200))
def test_decoding_arbitrary_text_never_raises_anything_but_value_error(token: str) -> None:
    try:
        Cursor.decode(token)
    except ValueError as error:
        assert str(error) == "malformed cursor"


@pytest.mark.parametrize(
    "raw",
    [
        "2024-01-01T00:00:00|1",  # naive timestamp
        "2024-01-01T00:00:00+00:00|0",
        "2024-01-01T00:00:00+00:00|9223372036854775808",
        "2024-01-01T00:00:00+00:00|-3",
        "2024-01-01T00:00:00+00:00",
        "2024-01-01T00:00:00+00:00|1|2",
        "yesterday|1",
    ],
)
def test_well_encoded_but_meaningless_cursors_are_rejected(raw: str) -> None:
    import base64

    token = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    with pytest.raises(ValueError, match="malformed cursor"):
        Cursor.decode(token)
