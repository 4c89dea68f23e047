"""Migrations: empty → head → base, the ORM matches them, and the SQLite pragmas hold."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import OperationalError

from service import db
from service.tables import Base


def test_upgrade_and_downgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{(tmp_path / 'm.db').as_posix()}"
    db.migrate(url)
    engine = db.make_engine(url)
    names = set(inspect(engine).get_table_names())
    assert {"tasks", "task_events", "model_memory", "alembic_version"} <= names
    assert {"task_history", "model_stats"} <= set(inspect(engine).get_view_names())
    db.downgrade(url, "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    assert inspect(engine).get_view_names() == []
    db.migrate(url)  # and up again
    engine.dispose()


def test_orm_matches_migrations(db_url: str) -> None:
    engine = db.make_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_sqlite_pragmas_and_readonly_engine(db_url: str) -> None:
    engine = db.make_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == db.BUSY_TIMEOUT_MS
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    ro = db.make_engine(db_url, readonly=True)
    with ro.connect() as conn, pytest.raises(OperationalError, match="readonly"):
        conn.execute(text("DELETE FROM tasks"))
