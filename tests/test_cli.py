"""The command line against a stopped service: status, tasks, retry, cancel, sql."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service import db, outcome
from service.config import load_settings
from service.tasks import NewTask, TaskQueue
from tests.conftest import write_settings
from tests.speech import tone_wav

REPO = Path(__file__).resolve().parents[1]


def app(settings: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "app.py"), "--settings", str(settings), *args],
        capture_output=True, text=True, encoding="utf-8", timeout=120, cwd="/",
    )


@pytest.fixture
def env(tmp_path: Path):
    path = write_settings(tmp_path / "站点", {"models": {"default": "tiny.en"}})
    s = load_settings(path)
    db.migrate(s.database_url)
    q = TaskQueue(db.make_engine(s.database_url))
    yield path, s, q
    q.engine.dispose()


def add(s, q: TaskQueue, name: str) -> int:  # noqa: ANN001
    f = tone_wav(s.inbox / name, 0.5)
    st = f.stat()
    return q.enqueue(NewTask(source=name, size=st.st_size, mtime_ns=st.st_mtime_ns,
                             model="tiny.en")).id


def test_status_says_not_running_and_counts_states(env) -> None:
    path, s, q = env
    add(s, q, "a.wav")
    tid = add(s, q, "b.wav")
    q.cancel(tid)
    out = app(path, "status")
    assert out.returncode == 0 and "service not running" in out.stdout
    assert "pending 1" in out.stdout and "cancelled 1" in out.stdout
    data = json.loads(app(path, "status", "--json").stdout)
    assert data["service"] == "not running" and data["counts"]["pending"] == 1


def test_retry_brings_a_failed_file_back_from_failed_folder(env) -> None:
    path, s, q = env
    tid = add(s, q, "会议 记录.wav")
    q.claim(tid, "h:1", 60)
    row = q.fail(tid, "h:1", "error", "boom", retryable=False, backoff_seconds=0)
    outcome.settle(s, q, row)
    assert (s.failed / "会议 记录.wav").is_file()
    assert (s.outbox / "会议 记录.wav.error.txt").is_file()
    out = app(path, "retry", str(tid))
    assert out.returncode == 0, out.stderr
    row = q.get(tid)
    assert row.status == "pending" and row.attempts == 0 and row.source_state == "inbox"
    assert (s.inbox / "会议 记录.wav").is_file() and not (s.failed / "会议 记录.wav").exists()
    again = app(path, "retry", str(tid))
    assert again.returncode == 1 and "only failed or cancelled" in again.stderr


def test_cancel_and_tasks_listing(env) -> None:
    path, s, q = env
    tid = add(s, q, "x.wav")
    assert app(path, "cancel", str(tid)).returncode == 0
    assert app(path, "cancel", str(tid)).returncode == 1
    assert (s.inbox / "x.wav").is_file()  # nothing is lost: the file stays where it was
    listing = app(path, "tasks", "--status", "cancelled")
    assert "x.wav" in listing.stdout and "(1 row)" in listing.stdout


def test_sql_is_read_only_and_reports_errors_plainly(env) -> None:
    path, s, q = env
    add(s, q, "y.wav")
    ok = app(path, "sql", "SELECT source, status FROM task_history")
    assert ok.returncode == 0 and "y.wav" in ok.stdout
    write = app(path, "sql", "DELETE FROM tasks")
    assert write.returncode == 1 and "readonly" in write.stderr
    assert q.counts()["pending"] == 1
    bad = app(path, "sql", "SELECT nope FROM tasks")
    assert bad.returncode == 1 and "no such column" in bad.stderr


def test_sql_cannot_attach_a_database_file_anywhere(env, tmp_path: Path) -> None:
    path, s, q = env
    target = tmp_path / "elsewhere" / "x.db"
    target.parent.mkdir()
    out = app(path, "sql", f"ATTACH DATABASE '{target}' AS x")
    assert out.returncode == 1 and "not authorized" in out.stderr
    assert not target.exists()
    assert app(path, "sql", "SELECT count(*) FROM tasks").returncode == 0  # reading still works


def test_retry_refuses_while_a_new_file_of_the_same_name_is_in_the_inbox(env) -> None:
    path, s, q = env
    tid = add(s, q, "talk.wav")
    q.claim(tid, "h:1", 60)
    outcome.settle(s, q, q.fail(tid, "h:1", "error", "boom", retryable=False, backoff_seconds=0))
    assert (s.failed / "talk.wav").is_file()
    newer = add(s, q, "talk.wav")  # a new recording with the same name, now pending
    out = app(path, "retry", str(tid))
    assert out.returncode == 1 and "another file named talk.wav" in out.stderr
    assert (s.failed / "talk.wav").is_file() and not (s.inbox / "talk (2).wav").exists()
    assert q.get(tid).status == "failed" and q.get(newer).status == "pending"
    assert len(q.list()) == 2


def test_tasks_output_escapes_control_characters_in_names(env) -> None:
    path, s, q = env
    evil = "a\n2026-12-01 09:00:00 ERROR forged line\x1b[2J.wav"
    q.enqueue(NewTask(source=evil, size=1, mtime_ns=1, model="tiny.en"))
    out = app(path, "tasks")
    assert out.returncode == 0
    assert "\x1b" not in out.stdout and "\n2026" not in out.stdout
    assert "a\\n2026-12-01 09:00:00 ERROR forged line\\x1b[2J.wav" in out.stdout
    assert len(out.stdout.splitlines()) == 4  # header, rule, one row, count


def test_invalid_settings_refuse_with_the_key_named(tmp_path: Path) -> None:
    path = write_settings(tmp_path, {"gpu": {"max_utilization": 2}})
    out = app(path, "status")
    assert out.returncode == 2 and "gpu.max_utilization" in out.stderr


def test_parent_process_never_imports_torch_or_whisper() -> None:
    """The service process must not load torch (memory, and CUDA must never start there)."""
    code = (
        "import sys, service.cli, service.runner, service.scheduler, service.watcher;"
        "print('torch' in sys.modules, 'whisper' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_status_shows_vram_estimate_against_measured(env) -> None:
    from service.calibration import Calibration
    from service.clock import SystemClock

    path, s, q = env
    cal = Calibration(q.engine, SystemClock())
    for peak in (3300, 3350, 3320):
        cal.record("NVIDIA H100 80GB HBM3", "large-v3", "fp16", peak_mb=peak, rtf=0.05)
    out = app(path, "status")
    assert "large-v3 on NVIDIA H100 80GB HBM3: estimate" in out.stdout
    assert "(default 12288), 3323 MiB measured (3 runs)" in out.stdout
    data = json.loads(app(path, "status", "--json").stdout)
    [est] = data["vram_estimates"]
    assert est["samples"] == 3 and 3323 <= est["estimate_mb"] < 12288


def test_app_py_imports_nothing_when_a_worker_reruns_it() -> None:
    """multiprocessing re-runs the main script in every worker (as __mp_main__): app.py must
    not import the service there, or each task pays ~0.6 s before its model starts loading."""
    code = ("import runpy, sys; runpy.run_path('app.py', run_name='__mp_main__'); "
            "print([m for m in ('service.cli', 'sqlalchemy', 'pydantic', 'apscheduler', "
            "'watchdog', 'av') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_models_list_shows_the_engines_that_run_each_model(tmp_path: Path,
                                                           engine_models_dir: Path) -> None:
    settings = write_settings(tmp_path / "站点", {"models": {"dir": str(engine_models_dir)}})
    out = app(settings, "models", "list")
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines()[1:]}
    for name in ("tiny.en", "base"):  # NAME.pt and the CTranslate2 folder NAME/
        assert "openai-whisper, faster-whisper" in rows[name], out.stdout
    assert "n_audio_state" in rows["base"]  # the checkpoint's dims, as before


@pytest.mark.parametrize("encoding", ["cp1252", "cp936"])
def test_a_console_that_cannot_show_every_name_gets_escapes_not_a_traceback(
    env, encoding: str
) -> None:
    """`PYTHONIOENCODING=cp1252 python app.py status` (a Windows console) with Chinese and
    emoji file names: everything the console can show is shown, the rest escaped."""
    path, s, q = env
    tid = add(s, q, "会议 记录 🎉.wav")
    q.claim(tid, "h:1", 60)
    q.fail(tid, "h:1", "not_audio", "会议 记录 🎉.wav is not audio", retryable=False,
           backoff_seconds=1)
    for args in (("status",), ("tasks",), ("sql", "SELECT source FROM tasks")):
        out = subprocess.run(
            [sys.executable, str(REPO / "app.py"), "--settings", str(path), *args],
            capture_output=True, timeout=120, cwd="/",
            env=dict(os.environ, PYTHONIOENCODING=encoding),
        )
        assert out.returncode == 0, out.stderr.decode(encoding, "replace")
        assert b"Traceback" not in out.stderr
        shown = out.stdout.decode(encoding)
        assert "\\U0001f389" in shown  # the emoji, escaped
        if encoding == "cp936":
            assert "会议 记录" in shown  # what the console can show stays readable


def test_a_reader_that_stops_early_ends_the_command_quietly(env) -> None:
    """`python app.py sql … | head -1`: the closed pipe is no traceback."""
    path, _s, _q = env
    query = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) "
             "SELECT x FROM c")
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "app.py"), "--settings", str(path), "sql", query],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/",
    )
    assert proc.stdout.readline().strip() == b"x"
    proc.stdout.close()  # what `head -1` does after its line
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert b"Traceback" not in err and b"BrokenPipe" not in err


@pytest.mark.parametrize(("data", "needle"), [
    ({"paths": {"inbox": "notes.txt/inbox"}}, "paths.inbox:"),
    ({"paths": {"logs": "notes.txt"}}, "paths.logs:"),
    ({"models": {"default": "large-v9"}}, "models.default: 'large-v9' is neither"),
])
def test_start_refuses_bad_settings_in_one_line_naming_the_key(
    tmp_path: Path, data: dict, needle: str
) -> None:
    """A folder path running through a file, a model name nobody has: one line, no traceback."""
    path = write_settings(tmp_path, data)
    (tmp_path / "notes.txt").write_text("a file, not a folder", encoding="utf-8")
    out = app(path, "run")
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    if "models" in data:  # says which names exist
        assert "tiny.en" in out.stderr and "models there: none" in out.stderr
