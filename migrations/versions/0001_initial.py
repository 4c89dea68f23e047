"""initial schema: tasks, task_events, model_memory and the task_history / model_stats views

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

OPEN = "status IN ('pending', 'loading', 'processing')"


def _seconds(later: str, earlier: str, dialect: str) -> str:
    """SQL for (later - earlier) in seconds, per dialect."""
    if dialect == "sqlite":
        return f"(julianday({later}) - julianday({earlier})) * 86400.0"
    # EXTRACT gives numeric on PostgreSQL 14+: a float like SQLite's, not Decimal('0E-20').
    return f"CAST(EXTRACT(EPOCH FROM ({later} - {earlier})) AS DOUBLE PRECISION)"


def _views(dialect: str) -> list[str]:
    wait = _seconds("claimed_at", "created_at", dialect)
    total = _seconds("finished_at", "created_at", dialect)
    history = f"""
CREATE VIEW task_history AS
SELECT id, source, model, status, attempts, priority, device, audio_seconds,
       created_at, claimed_at, finished_at,
       {wait} AS queue_wait_seconds,
       load_seconds, transcribe_seconds,
       CASE WHEN audio_seconds > 0 THEN transcribe_seconds / audio_seconds END AS real_time_factor,
       {total} AS total_seconds,
       detected_language, vram_peak_mb, error_kind, error_message
FROM tasks"""
    stats = """
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
    return [history, stats]


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("audio_seconds", sa.Float(), nullable=True),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("language", sa.String(20), nullable=True),
        sa.Column("task", sa.String(20), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("resource_retries", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("worker_id", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("device", sa.String(20), nullable=True),
        sa.Column("vram_estimate_mb", sa.Integer(), nullable=True),
        sa.Column("vram_peak_mb", sa.Integer(), nullable=True),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(), nullable=True),
        sa.Column("loading_at", sa.DateTime(), nullable=True),
        sa.Column("processing_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("load_seconds", sa.Float(), nullable=True),
        sa.Column("transcribe_seconds", sa.Float(), nullable=True),
        sa.Column("detected_language", sa.String(20), nullable=True),
        sa.Column("outputs", sa.JSON(), nullable=True),
        sa.Column("source_state", sa.String(20), nullable=False),
        sa.Column("error_kind", sa.String(40), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
    )
    op.create_index("ix_tasks_pick", "tasks", ["status", "priority", "created_at"])
    op.create_index("ix_tasks_source", "tasks", ["source"])
    op.create_index(
        "uq_tasks_open_source",
        "tasks",
        ["source"],
        unique=True,
        sqlite_where=sa.text(OPEN),
        postgresql_where=sa.text(OPEN),
    )
    op.create_table(
        "task_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "task_id", sa.Integer(), sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("from_status", sa.String(20), nullable=True),
        sa.Column("to_status", sa.String(20), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("worker_id", sa.String(200), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
    )
    op.create_index("ix_task_events_task_id", "task_events", ["task_id"])
    op.create_table(
        "model_memory",
        sa.Column("gpu_name", sa.String(200), primary_key=True),
        sa.Column("model", sa.String(100), primary_key=True),
        sa.Column("precision", sa.String(20), primary_key=True),
        sa.Column("samples", sa.JSON(), nullable=False),
        sa.Column("mean_mb", sa.Float(), nullable=False),
        sa.Column("variance", sa.Float(), nullable=False),
        sa.Column("last_peak_mb", sa.Float(), nullable=True),
        sa.Column("floor_mb", sa.Float(), nullable=False),
        sa.Column("rtf_mean", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
    )
    dialect = op.get_bind().dialect.name
    for sql in _views(dialect):
        op.execute(sql)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS model_stats")
    op.execute("DROP VIEW IF EXISTS task_history")
    op.drop_table("model_memory")
    op.drop_index("ix_task_events_task_id", table_name="task_events")
    op.drop_table("task_events")
    op.drop_index("uq_tasks_open_source", table_name="tasks")
    op.drop_index("ix_tasks_source", table_name="tasks")
    op.drop_index("ix_tasks_pick", table_name="tasks")
    op.drop_table("tasks")
