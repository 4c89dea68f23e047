"""The service's start and health checks against a broken database or a vanished inbox."""

from __future__ import annotations

import os
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from service import db, fsops, outcome
from service.config import load_settings
from service.runner import Service, StartError
from service.tasks import NewTask
from service.web import check_health
from tests.conftest import write_settings
from tests.svc import app


@pytest.fixture
def settings(tmp_path: Path):
    s = load_settings(write_settings(tmp_path / "svc", {
        "gpu": {"devices": "none"}, "http": {"enabled": False},
        "scheduler": {"prestart_workers": 0},
    }))
    db.migrate(s.database_url)
    return s


def corrupt(path: Path) -> None:
    """Damage the pages of the index on tasks.source (what a failing disk can leave): the file
    still opens, migrations and the start-up queries still pass, but every new file's lookup
    fails — the service used to run on with /health ok."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=DELETE")
    for i in range(300):
        conn.execute(
            "INSERT INTO tasks (source, size, mtime_ns, model, task, priority, options, status,"
            " attempts, resource_retries, max_attempts, progress, created_at, source_state)"
            " VALUES (?, 1, 1, 'tiny.en', 'transcribe', 0, '{}', 'completed', 1, 0, 3, 1.0,"
            " '2026-01-01 00:00:00', 'archived')", (f"file {i} " + "x" * 200 + ".wav",))
    conn.commit()
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = [n for (n,) in conn.execute(
        "SELECT pageno FROM dbstat WHERE name = 'ix_tasks_source' AND pagetype = 'leaf'")]
    conn.close()
    assert pages
    data = bytearray(path.read_bytes())
    for n in pages:
        start = (n - 1) * page_size
        data[start: start + 64] = b"\xa5" * 64  # the b-tree page header and cell pointers
    path.write_bytes(bytes(data))


def test_a_damaged_database_refuses_to_start_with_a_plain_reason(settings) -> None:
    corrupt(settings.sqlite_path)
    assert db.integrity_problem(settings.database_url) is not None
    with pytest.raises(StartError, match="damaged"):
        Service(settings, backend=None).start()
    out = app(settings.base_dir / "settings.yaml", "run", timeout=120)
    assert out.returncode == 1 and "cannot start" in out.stderr and "damaged" in out.stderr


def test_health_reports_a_deleted_database_or_inbox(settings) -> None:
    assert db.integrity_problem(settings.database_url) is None
    service = Service(settings, backend=None)
    service.start()
    try:
        engine = db.make_engine(settings.database_url, readonly=True)
        ok, reasons, _ = check_health(service, engine)
        assert ok, reasons
        service.scheduler.pause_job("maintenance")  # run its checks by hand below
        settings.inbox.rmdir()
        settings.sqlite_path.rename(settings.sqlite_path.with_name("moved.db"))
        service._maintain()
        ok, reasons, _ = check_health(service, engine)
        assert not ok
        assert any("inbox" in r and "missing" in r for r in reasons), reasons
        assert any("database" in r and "missing" in r for r in reasons), reasons
        engine.dispose()
    finally:
        service.stop()


def test_a_move_that_failed_while_the_file_was_held_is_tried_again_while_running(
    settings, monkeypatch
) -> None:
    """A player (or a sync client) held the finished source longer than fsops' retries: the
    move to archive/ is tried again by maintenance, not only at the next start."""
    service = Service(settings, backend=None)
    service.start()
    try:
        service.scheduler.pause_job("maintenance")  # run it by hand below
        q = service.queue
        src = settings.inbox / "会议.wav"
        src.write_bytes(b"audio")
        st = src.stat()
        tid = q.enqueue(NewTask(source="会议.wav", size=st.st_size, mtime_ns=st.st_mtime_ns,
                                model="tiny.en")).id
        q.claim(tid, "h:1", 60)
        q.start_processing(tid, "h:1", 0.1)
        task = q.complete(tid, "h:1", transcribe_seconds=1.0, outputs=[])
        real_rename = os.rename

        def held(src_path, dst):  # noqa: ANN001, ANN202
            err = PermissionError(13, "being used by another process", str(src_path))
            err.winerror = 32  # Windows' sharing violation
            raise err

        monkeypatch.setattr(os, "rename", held)
        monkeypatch.setattr(fsops, "RETRY_DELAYS", (0.01,), raising=False)
        outcome.settle(settings, q, task)  # what the dispatcher does at completion
        assert src.is_file() and q.get(tid).source_state == "inbox"
        monkeypatch.setattr(os, "rename", real_rename)  # the player lets go
        q.update_fields(tid, finished_at=q.clock.now() - timedelta(minutes=2))  # time passes
        service._last_settle = 0.0  # the retry is due
        service._maintain()
        assert (settings.archive / "会议.wav").read_bytes() == b"audio" and not src.exists()
        assert q.get(tid).source_state == "archived"
    finally:
        service.stop()


def test_a_start_finishes_moves_a_stop_cut_short(settings) -> None:
    """The service stopped in the middle of moving two finished sources (a power cut): one
    is hidden under its claim name in archive/, one in the inbox (a move to another disk).
    The next start gives both their names back and settles them; nothing stays hidden."""
    from service.tasks import TaskQueue

    q = TaskQueue(db.make_engine(settings.database_url))
    ids = {}
    settings.inbox.mkdir(parents=True, exist_ok=True)
    for name in ("会议 1.wav", "会议 2.wav"):
        src = settings.inbox / name
        src.write_bytes(name.encode())
        st = src.stat()
        tid = q.enqueue(NewTask(source=name, size=st.st_size, mtime_ns=st.st_mtime_ns,
                                model="tiny.en")).id
        q.claim(tid, "h:1", 60)
        q.start_processing(tid, "h:1", 0.1)
        q.complete(tid, "h:1", transcribe_seconds=1.0, outputs=[])
        ids[name] = tid
    settings.archive.mkdir(exist_ok=True)
    os.rename(settings.inbox / "会议 1.wav", fsops._claim_name(settings.archive, "会议 1.wav"))
    os.rename(settings.inbox / "会议 2.wav", fsops._claim_name(settings.inbox, "会议 2.wav"))
    q.engine.dispose()

    service = Service(settings, backend=None)
    service.start()
    try:
        for name, tid in ids.items():
            assert (settings.archive / name).read_bytes() == name.encode()
            task = service.queue.get(tid)
            assert (task.source_state, task.moved_to) == ("archived", name)
        left = [p.name for root in (settings.inbox, settings.archive)
                for p in root.rglob("*") if p.name.endswith(".moving")]
        assert left == []
    finally:
        service.stop()
