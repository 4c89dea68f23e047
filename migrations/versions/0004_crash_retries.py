"""tasks.crash_retries: requeues after the *service* died (kill -9, power cut), counted apart
from attempts so a crash never costs a file its attempts, yet bounded so a file that really
brings the whole service down still ends.

Revision ID: 0004_crash_retries
Revises: 0003_engine_calibration
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_crash_retries"
down_revision = "0003_engine_calibration"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "tasks", sa.Column("crash_retries", sa.Integer(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    op.drop_column("tasks", "crash_retries")  # SQLite ≥ 3.35 drops a column in place
