"""Statement classification for the query metrics, and the slow-query fault's setting."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy.dialects import postgresql

from app.api import crud
from app.api.core.config import Settings
from app.api.core.faults import SlowQueryFault
from app.api.core.statements import classify

pytestmark = pytest.mark.unit

TABLES = frozenset({"users", "follows", "posts", "likes", "comments"})


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("SELECT 1", ("SELECT", None)),
        ("SELECT version_num FROM alembic_version", ("SELECT", "alembic_version")),
        (
            "SELECT EXISTS (SELECT * FROM posts WHERE posts.id = %(id_1)s::BIGINT) AS anon_1",
            ("SELECT", "posts"),
        ),
        (
            "SELECT users.id, (SELECT count(*) FROM follows WHERE follows.followee_id = users.id)"
            " AS followers FROM users WHERE users.username = %(username_1)s",
            ("SELECT", "users"),
        ),
        ("SELECT a.id FROM (SELECT id FROM likes) AS a", ("SELECT", "likes")),
        ("INSERT INTO users (username) VALUES (%(u)s) RETURNING users.id", ("INSERT", "users")),
        ("UPDATE users SET bio=%(bio)s WHERE users.id = %(id_1)s", ("UPDATE", "users")),
        ('DELETE FROM public."likes" WHERE likes.post_id = %(p)s', ("DELETE", "likes")),
        ("WITH x AS (SELECT 1 FROM users) DELETE FROM posts", ("DELETE", "posts")),
        ("SELECT 'from users' FROM comments -- from users", ("SELECT", "comments")),
        ("  select * from Posts", ("SELECT", "posts")),
        ("SAVEPOINT sa_savepoint_1", ("OTHER", None)),
        ("", ("OTHER", None)),
    ],
)
def test_classify(statement: str, expected: tuple[str, str | None]) -> None:
    assert classify(statement) == expected


def test_post_reads_are_about_posts_despite_their_count_subqueries() -> None:
    dialect = postgresql.psycopg.dialect()  # type: ignore[attr-defined]
    for statement in (
        crud._timeline_statement(keyset=False),
        crud._timeline_statement(keyset=True),
        crud._single_post_statement(personalised=True),
        crud._author_posts_statement(keyset=True, personalised=False),
    ):
        assert classify(str(statement.compile(dialect=dialect))) == ("SELECT", "posts")


def test_slow_query_fault_is_off_unless_set() -> None:
    assert SlowQueryFault.parse("", TABLES) is None
    assert SlowQueryFault.parse("posts:0", TABLES) is None
    assert SlowQueryFault.parse("posts:300", TABLES) == SlowQueryFault("posts", 300)


@pytest.mark.parametrize("setting", ["posts", "posts:", "posts:abc", ":300", "postz:300"])
def test_slow_query_fault_rejects_a_bad_setting(setting: str) -> None:
    with pytest.raises(ValueError, match="SOCIALNET_FAULT_SLOW_QUERY"):
        SlowQueryFault.parse(setting, TABLES)


def test_slow_query_setting_is_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCIALNET_FAULT_SLOW_QUERY", "posts:300")
    assert Settings().fault_slow_query == "posts:300"
    monkeypatch.setenv("SOCIALNET_FAULT_SLOW_QUERY", "posts; DROP TABLE users:1")
    with pytest.raises(ValidationError):
        Settings()
