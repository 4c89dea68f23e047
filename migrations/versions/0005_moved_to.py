"""tasks.moved_to: where the source went, relative to archive/ or failed/.

It differs from `source` when the name was taken there (`talk (2).wav`, a folder differing only
in letter case `team (2)/`): without it the web player and a retry would look for the first
file of that name, which is another recording.

Revision ID: 0005_moved_to
Revises: 0004_crash_retries
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_moved_to"
down_revision = "0004_crash_retries"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("moved_to", sa.String(1000), nullable=True))


def downgrade() -> None:
    op.drop_column("tasks", "moved_to")  # SQLite ≥ 3.35 drops a column in place
