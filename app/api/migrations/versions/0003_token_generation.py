"""token generation per user: logging out revokes the tokens issued before

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-02

A constant default: PostgreSQL adds the column without rewriting the table, and the release
still serving inserts users without knowing it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column("token_generation", sa.Integer(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("users", "token_generation")
