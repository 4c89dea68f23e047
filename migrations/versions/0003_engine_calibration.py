"""model_memory keyed by engine too: openai-whisper and faster-whisper learn VRAM separately

CTranslate2 (faster-whisper) needs different memory than openai-whisper for the same model, and
its compute types (float16, int8_float16, int8 …, "-batchN" when batched) go into `precision`.
Every existing row was measured with openai-whisper. A primary key cannot change in place on
SQLite, so the table is copied into a new one with the wider key (the same on PostgreSQL).

Revision ID: 0003_engine_calibration
Revises: 0002_speakers_minutes
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_engine_calibration"
down_revision = "0002_speakers_minutes"
branch_labels = None
depends_on = None

KEY = ["gpu_name", "model", "precision"]
VALUES = ["samples", "mean_mb", "variance", "last_peak_mb", "floor_mb", "rtf_mean", "updated_at"]


def _table(name: str, key: list[str], with_engine: bool) -> None:
    engine = [sa.Column("engine", sa.String(40), nullable=False,
                        server_default="openai-whisper")] if with_engine else []
    op.create_table(
        name,
        sa.Column("gpu_name", sa.String(200), nullable=False),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("precision", sa.String(20), nullable=False),
        *engine,
        sa.Column("samples", sa.JSON(), nullable=False),
        sa.Column("mean_mb", sa.Float(), nullable=False),
        sa.Column("variance", sa.Float(), nullable=False),
        sa.Column("last_peak_mb", sa.Float(), nullable=True),
        sa.Column("floor_mb", sa.Float(), nullable=False),
        sa.Column("rtf_mean", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint(*key, name=f"pk_{name}"),
    )


def _copy(into: str, columns: list[str], select: str, where: str = "") -> None:
    op.execute(f"INSERT INTO {into} ({', '.join(columns)}) SELECT {select} "
               f"FROM model_memory {where}")
    op.drop_table("model_memory")
    op.rename_table(into, "model_memory")


def upgrade() -> None:
    _table("model_memory_v2", [*KEY, "engine"], with_engine=True)
    cols = [*KEY, *VALUES]
    _copy("model_memory_v2", [*cols, "engine"], ", ".join(cols) + ", 'openai-whisper'")


def downgrade() -> None:
    _table("model_memory_v1", KEY, with_engine=False)
    cols = [*KEY, *VALUES]
    _copy("model_memory_v1", cols, ", ".join(cols), "WHERE engine = 'openai-whisper'")
