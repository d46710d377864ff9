from __future__ import annotations

import pytest

from socialnet_ops.core.migrations import contracting_statements

pytestmark = pytest.mark.unit

EXPANDING = """
-- Running upgrade 0001 -> 0002
CREATE TABLE bookmarks (id BIGSERIAL PRIMARY KEY, post_id BIGINT NOT NULL);
ALTER TABLE users ADD COLUMN location VARCHAR(100);
CREATE INDEX ix_bookmarks_post ON bookmarks (post_id);
UPDATE alembic_version SET version_num='0002' WHERE alembic_version.version_num = '0001';
"""


def test_adding_tables_columns_and_indexes_is_expand_only() -> None:
    assert contracting_statements(EXPANDING) == []


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("DROP TABLE likes;", "drops a table"),
        ("ALTER TABLE users DROP COLUMN bio;", "drops a column"),
        ("ALTER TABLE users RENAME COLUMN bio TO about;", "renames a table or column"),
        ("ALTER TABLE posts RENAME TO articles;", "renames a table or column"),
        ("ALTER TABLE posts ALTER COLUMN text TYPE VARCHAR(280);", "changes a column type"),
        ("ALTER TABLE users ALTER COLUMN bio SET NOT NULL;", "makes a column NOT NULL"),
    ],
)
def test_contracting_statements_are_found_with_the_reason(sql: str, why: str) -> None:
    found = contracting_statements(EXPANDING + sql)
    assert [reason for _, reason in found] == [why]
    assert found[0][0] == sql.rstrip(";")


def test_comments_do_not_count() -> None:
    assert contracting_statements("-- DROP TABLE users\nSELECT 1;") == []
