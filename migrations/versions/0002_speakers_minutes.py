"""speakers and minutes: tasks.diarize_seconds, the minutes' own state (summary_*), views

Revision ID: 0002_speakers_minutes
Revises: 0001
Create Date: 2026-12-01

The minutes are made by the service after the transcript is written, with their own retries:
summary_status is NULL (not wanted) | pending | running | done | failed, summary_next_at the
earliest next try (or, while running, when the claim lapses), summary_worker the node that
holds it. task_history shows diarize_seconds and summary_status; both views are re-created
(model_stats reads task_history).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_speakers_minutes"
down_revision = "0001"
branch_labels = None
depends_on = None


def _seconds(later: str, earlier: str, dialect: str) -> str:
    if dialect == "sqlite":
        return f"(julianday({later}) - julianday({earlier})) * 86400.0"
    return f"CAST(EXTRACT(EPOCH FROM ({later} - {earlier})) AS DOUBLE PRECISION)"


def _history(dialect: str, extra: bool) -> str:
    wait = _seconds("claimed_at", "created_at", dialect)
    total = _seconds("finished_at", "created_at", dialect)
    more = "diarize_seconds, summary_status, summary_error, " if extra else ""
    return f"""
CREATE VIEW task_history AS
SELECT id, source, model, status, attempts, priority, device, audio_seconds,
       created_at, claimed_at, finished_at,
       {wait} AS queue_wait_seconds,
       load_seconds, transcribe_seconds, {more}
       CASE WHEN audio_seconds > 0 THEN transcribe_seconds / audio_seconds END AS real_time_factor,
       {total} AS total_seconds,
       detected_language, vram_peak_mb, error_kind, error_message
FROM tasks"""


STATS = """
CREATE VIEW model_stats AS
SELECT model, device,
       COUNT(*) AS tasks,
       SUM(CASE WHEN status = 'completed' THEN 1 ELSE 0 END) AS completed,
       SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed,
       AVG(CASE WHEN status = 'completed' THEN real_time_factor END) AS avg_real_time_factor,
       AVG(load_seconds) AS avg_load_seconds,
       AVG(queue_wait_seconds) AS avg_queue_wait_seconds,
       SUM(CASE WHEN status = 'completed' THEN audio_seconds ELSE 0 END) / 3600.0
           AS audio_hours_done,
       MAX(vram_peak_mb) AS max_vram_peak_mb
FROM task_history
GROUP BY model, device"""


def _recreate_views(extra: bool) -> None:
    dialect = op.get_bind().dialect.name
    op.execute("DROP VIEW IF EXISTS model_stats")
    op.execute("DROP VIEW IF EXISTS task_history")
    op.execute(_history(dialect, extra))
    op.execute(STATS)


COLUMNS = ("diarize_seconds", "summary_status", "summary_attempts", "summary_next_at",
           "summary_worker", "summary_error")


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS model_stats")  # SQLite checks views when a table changes
    op.execute("DROP VIEW IF EXISTS task_history")
    op.add_column("tasks", sa.Column("diarize_seconds", sa.Float(), nullable=True))
    op.add_column("tasks", sa.Column("summary_status", sa.String(20), nullable=True))
    op.add_column("tasks", sa.Column("summary_attempts", sa.Integer(), nullable=False,
                                     server_default="0"))
    op.add_column("tasks", sa.Column("summary_next_at", sa.DateTime(), nullable=True))
    op.add_column("tasks", sa.Column("summary_worker", sa.String(200), nullable=True))
    op.add_column("tasks", sa.Column("summary_error", sa.Text(), nullable=True))
    op.create_index("ix_tasks_summary", "tasks", ["summary_status", "summary_next_at"])
    _recreate_views(extra=True)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS model_stats")
    op.execute("DROP VIEW IF EXISTS task_history")
    op.drop_index("ix_tasks_summary", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:  # SQLite before 3.35 cannot drop a column
        for name in COLUMNS:
            batch.drop_column(name)
    _recreate_views(extra=False)
