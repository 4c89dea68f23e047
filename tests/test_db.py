"""Migrations: empty → head → base, the ORM matches them, the SQLite pragmas hold; the same on
PostgreSQL, plus its views, its read-only `sql` and nodes that migrate at the same time."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError, OperationalError

from service import cli, db
from service.clock import ManualClock
from service.tables import COMPLETED, Base
from service.tasks import NewTask, TaskQueue
from tests.conftest import run_together, write_settings


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


# ---- PostgreSQL (tests/pg.py starts a real server; skipped where it is not installed) ---------
def test_upgrade_and_downgrade_on_postgresql(pg_url: str) -> None:
    db.migrate(pg_url)
    engine = db.make_engine(pg_url)
    assert {"tasks", "task_events", "model_memory", "alembic_version"} <= set(
        inspect(engine).get_table_names())
    assert {"task_history", "model_stats"} <= set(inspect(engine).get_view_names())
    [index] = [i for i in inspect(engine).get_indexes("tasks")
               if i["name"] == "uq_tasks_open_source"]
    assert index["unique"] and "pending" in str(index["dialect_options"]["postgresql_where"])
    db.downgrade(pg_url, "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    assert inspect(engine).get_view_names() == []
    db.migrate(pg_url)
    engine.dispose()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_orm_matches_migrations_on_postgresql(db_url: str) -> None:
    test_orm_matches_migrations(db_url)


def _migrate(url: str, go, out) -> None:  # noqa: ANN001
    import alembic.command  # noqa: F401 - imports done before the start signal

    go.wait()
    try:
        db.migrate(url)
        out.put("ok")
    except Exception as err:  # noqa: BLE001 - reported to the test
        out.put(repr(err))


def test_nodes_starting_together_migrate_one_at_a_time(pg_url: str) -> None:
    """Without the advisory lock 2 of 4 failed: 'relation "alembic_version" already exists'."""
    results = run_together(_migrate, [(pg_url,)] * 4)
    assert results == ["ok"] * 4


def test_history_views_and_readonly_engine_on_postgresql(pg_url: str, tmp_path: Path,
                                                           capsys) -> None:  # noqa: ANN001
    db.migrate(pg_url)
    clock = ManualClock()
    q = TaskQueue(db.make_engine(pg_url), clock)
    t = q.enqueue(NewTask(source="a.mp3", size=1, mtime_ns=1, model="tiny.en",
                          audio_seconds=10.0))
    clock.advance(1.5)
    q.claim(t.id, "h:1", 60, device="cpu")
    q.start_processing(t.id, "h:1", 0.5)
    clock.advance(2)
    q.complete(t.id, "h:1", transcribe_seconds=2.0, outputs=["a.txt"])
    q.engine.dispose()
    ro = db.make_engine(pg_url, readonly=True)
    with ro.connect() as conn:
        row = conn.execute(text("SELECT * FROM task_history")).mappings().one()
        assert row["queue_wait_seconds"] == 1.5 and row["total_seconds"] == 3.5  # floats
        assert row["real_time_factor"] == 0.2
        stats = conn.execute(text("SELECT * FROM model_stats")).mappings().one()
        assert stats["completed"] == 1 and stats["avg_queue_wait_seconds"] == 1.5
        with pytest.raises(DBAPIError, match="read-only transaction"):
            conn.execute(text("DELETE FROM tasks"))
    ro.dispose()

    # The CLI's `sql` on PostgreSQL: results print; nothing can write, not even after COMMIT.
    settings = write_settings(tmp_path, {"database": {"url": pg_url}})
    assert cli.main(["--settings", str(settings), "sql",
                     "SELECT source, status, total_seconds FROM task_history"]) == 0
    printed = capsys.readouterr().out
    assert "a.mp3" in printed and "3.5" in printed and "(1 row)" in printed
    for attack in ("DELETE FROM tasks", "COMMIT; DELETE FROM tasks",
                   "SELECT 1; COMMIT; SET default_transaction_read_only = off; DELETE FROM tasks"):
        assert cli.main(["--settings", str(settings), "sql", attack]) == 1, attack
        assert "error:" in capsys.readouterr().err
    assert TaskQueue(db.make_engine(pg_url)).counts()[COMPLETED] == 1


def test_speakers_and_minutes_columns_reach_the_history_view(tmp_path: Path) -> None:
    """0002 adds diarize_seconds and the minutes' state; task_history shows them (both views
    re-created); down to 0001 and up again keeps the rows."""
    url = f"sqlite:///{(tmp_path / 'v.db').as_posix()}"
    db.migrate(url)
    engine = db.make_engine(url)
    q = TaskQueue(engine, ManualClock())
    tid = q.enqueue(NewTask(source="a.wav", size=1, mtime_ns=1, model="tiny.en")).id
    q.claim(tid, "n", 60, device="cpu")
    q.start_processing(tid, "n", 0.1)
    q.complete(tid, "n", transcribe_seconds=2.0, audio_seconds=10.0, diarize_seconds=0.7,
               summary_status="pending")
    with engine.connect() as conn:
        row = conn.execute(text("SELECT diarize_seconds, summary_status, real_time_factor "
                                "FROM task_history WHERE id = :i"), {"i": tid}).one()
        assert tuple(row) == (0.7, "pending", 0.2)
        assert conn.execute(text("SELECT completed FROM model_stats")).scalar() == 1
    db.downgrade(url, "0001")
    assert "diarize_seconds" not in {c["name"] for c in inspect(engine).get_columns("tasks")}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM task_history")).scalar() == 1
    db.migrate(url)
    engine.dispose()


def test_migration_0003_keys_calibration_by_engine(tmp_path: Path) -> None:
    """Rows measured before the second engine existed are openai-whisper's; a downgrade keeps
    them and drops faster-whisper's."""
    url = f"sqlite:///{(tmp_path / 'm.db').as_posix()}"
    db.migrate(url, "0001")
    engine = db.make_engine(url)
    row = "'H100', 'small', 'fp16', '[1000.0]', 1000, 0, 1000, 0, 0.05, NULL"
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO model_memory VALUES ({row})"))
    db.migrate(url)
    with engine.begin() as conn:
        assert conn.execute(text("SELECT engine, mean_mb FROM model_memory")).all() == [
            ("openai-whisper", 1000.0)]
        conn.execute(text(
            "INSERT INTO model_memory (gpu_name, model, precision, engine, samples, mean_mb, "
            "variance, floor_mb) VALUES ('H100', 'small', 'fp16', 'faster-whisper', '[]', 0, 0, "
            "0)"))
    db.downgrade(url, "0001")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT model, mean_mb FROM model_memory")).all() == [
            ("small", 1000.0)]
    engine.dispose()
