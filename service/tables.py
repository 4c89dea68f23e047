"""ORM tables. Alembic owns the schema (migrations/); these classes must match it.

Named tables.py, not models.py: in this project "model" means a Whisper model.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePosixPath

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

PENDING = "pending"
LOADING = "loading"
PROCESSING = "processing"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"

ACTIVE_STATES = (LOADING, PROCESSING)
OPEN_STATES = (PENDING, LOADING, PROCESSING)
FINAL_STATES = (COMPLETED, FAILED, CANCELLED)
ALL_STATES = OPEN_STATES + FINAL_STATES


class Base(DeclarativeBase):
    pass


class Task(Base):
    """One submitted file and everything that happened to it."""

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(Text)  # path relative to the inbox, '/' separated
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    audio_seconds: Mapped[float | None] = mapped_column(Float)
    model: Mapped[str] = mapped_column(String(100))
    language: Mapped[str | None] = mapped_column(String(20))
    task: Mapped[str] = mapped_column(String(20), default="transcribe")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    options: Mapped[dict] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    resource_retries: Mapped[int] = mapped_column(Integer, default=0)
    # requeues after the service itself died (not the file's fault; bounded, see tasks.py)
    crash_retries: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    device: Mapped[str | None] = mapped_column(String(20))  # "cpu" or "cuda:N"
    vram_estimate_mb: Mapped[int | None] = mapped_column(Integer)
    vram_peak_mb: Mapped[int | None] = mapped_column(Integer)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime)
    loading_at: Mapped[datetime | None] = mapped_column(DateTime)
    processing_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    load_seconds: Mapped[float | None] = mapped_column(Float)
    transcribe_seconds: Mapped[float | None] = mapped_column(Float)
    detected_language: Mapped[str | None] = mapped_column(String(20))
    outputs: Mapped[list | None] = mapped_column(JSON)
    source_state: Mapped[str] = mapped_column(String(20), default="inbox")
    # archived/failed: its path under archive/ or failed/ (a taken name there got " (2)")
    moved_to: Mapped[str | None] = mapped_column(String(1000))
    error_kind: Mapped[str | None] = mapped_column(String(40))
    error_message: Mapped[str | None] = mapped_column(Text)
    diarize_seconds: Mapped[float | None] = mapped_column(Float)  # speaker labels' time
    # The minutes (minutes.py), made after the transcript with their own retries:
    # NULL (not wanted) | pending | running | done | failed.
    summary_status: Mapped[str | None] = mapped_column(String(20))
    summary_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    summary_next_at: Mapped[datetime | None] = mapped_column(DateTime)  # next try / claim end
    summary_worker: Mapped[str | None] = mapped_column(String(200))
    summary_error: Mapped[str | None] = mapped_column(Text)

    @property
    def output_stem(self) -> str:
        """Its transcripts' file name without extension: given at the first claim (a free
        name: see outputs.transcript_stem) and kept in options, so retries rewrite the same
        files."""
        return (self.options or {}).get("output_stem") or PurePosixPath(self.source).stem

    __table_args__ = (
        Index("ix_tasks_pick", "status", "priority", "created_at"),
        Index("ix_tasks_source", "source"),
        # One open task per inbox file, also across machines sharing a database.
        Index(
            "uq_tasks_open_source",
            "source",
            unique=True,
            sqlite_where=text("status IN ('pending', 'loading', 'processing')"),
            postgresql_where=text("status IN ('pending', 'loading', 'processing')"),
        ),
        Index("ix_tasks_summary", "summary_status", "summary_next_at"),
    )


class TaskEvent(Base):
    """Every state change, written in the same transaction as the change itself."""

    __tablename__ = "task_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime] = mapped_column(DateTime)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[str | None] = mapped_column(Text)


class ModelMemory(Base):
    """VRAM calibration per (GPU name, model, precision, engine) from measured peaks."""

    __tablename__ = "model_memory"

    gpu_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    model: Mapped[str] = mapped_column(String(100), primary_key=True)
    precision: Mapped[str] = mapped_column(String(20), primary_key=True)  # fp16, int8_float16 …
    engine: Mapped[str] = mapped_column(String(40), primary_key=True, default="openai-whisper")
    samples: Mapped[list] = mapped_column(JSON, default=list)  # last N peaks in MiB
    mean_mb: Mapped[float] = mapped_column(Float, default=0.0)
    variance: Mapped[float] = mapped_column(Float, default=0.0)
    last_peak_mb: Mapped[float | None] = mapped_column(Float)
    floor_mb: Mapped[float] = mapped_column(Float, default=0.0)  # raised by out-of-memory
    rtf_mean: Mapped[float | None] = mapped_column(Float)  # seconds of work per audio second
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)
