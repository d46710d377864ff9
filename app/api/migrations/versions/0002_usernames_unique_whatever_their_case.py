"""usernames unique whatever their case

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-02

Usernames that already differ only by case stop the migration with their names: which account
keeps a name is a decision for people, not for a migration, and nothing is changed until then.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Held from the check to the index: no clashing sign-up can slip in between. Reads go on.
    op.execute("LOCK TABLE users IN SHARE MODE")
    # One line naming at most 20 groups; concatenated rather than with RAISE's placeholders,
    # which `alembic upgrade --sql` (the release's expand-only check) would print doubled.
    op.execute(
        """
        DO $$
        DECLARE
            shown text;
            groups bigint;
        BEGIN
            SELECT string_agg(names, '; ' ORDER BY names COLLATE "C"), max(total) INTO shown, groups
            FROM (
                SELECT string_agg(username, ', ' ORDER BY username COLLATE "C") AS names,
                       count(*) OVER () AS total
                FROM users
                GROUP BY lower(username COLLATE "C")
                HAVING count(*) > 1
                ORDER BY min(username COLLATE "C")
                LIMIT 20
            ) AS clashing;
            IF groups > 0 THEN
                RAISE EXCEPTION USING MESSAGE = 'usernames that differ only by case, '
                    || groups || ' group(s) (at most 20 shown): ' || shown
                    || '; rename all but one in each group, then migrate again';
            END IF;
        END $$
        """
    )
    op.execute('CREATE UNIQUE INDEX uq_users_username_key ON users (lower(username COLLATE "C"))')


def downgrade() -> None:
    op.drop_index("uq_users_username_key", table_name="users")
