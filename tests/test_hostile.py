"""Hostile file systems (issue 15): what a new user's odd files, or an attacker with write access
to the inbox or outbox, can do. One place for these attacks so they are easy to extend.

Each test runs the real parts (watchdog observer, SQLite file, PyAV, the worker's `run` with
tiny.en) against a real folder where the attack is set up with real links, FIFOs and names.
Every file the service sees must end as a row (pending, or failed with a reason and an
`.error.txt`), and nothing outside outbox/ may be written or read because of a name.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import struct
from pathlib import Path

import pytest

from service import db, fsops, jobs, outcome, outputs, scheduler
from service.clock import SystemClock
from service.config import SettingsError, load_settings
from service.tables import COMPLETED, FAILED, PENDING
from service.tasks import NewTask, TaskQueue
from tests.conftest import write_settings
from tests.speech import convert, tone_wav, wait_for
from tests.test_watcher import Running

posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX names, FIFOs and links")


@pytest.fixture
def watched(tmp_path: Path):
    """A running watcher whose refusals are settled the way the service settles them."""
    r = Running(tmp_path)
    r.watcher.on_rejected = lambda task: outcome.settle(r.settings, r.queue, task)
    yield r
    r.close()


def rows_for(r: Running, n: int, timeout: float = 60) -> dict[str, object]:
    """Wait until `n` files have rows; {source: row}."""
    rows = wait_for(lambda: len(r.tasks()) >= n and r.tasks(), timeout=timeout)
    return {t.source: t for t in rows}


# --- sidecars (issue 15.2 and "a sidecar symlinked outside the inbox") ---------------------------


@posix_only
def test_fifo_and_linked_sidecars_fail_their_file_and_never_block_the_watcher(
    watched: Running, tmp_path: Path
) -> None:
    inbox = watched.inbox
    (inbox / "team").mkdir(parents=True)
    os.mkfifo(inbox / "team" / "pipe.wav.json")  # a read of it would block for ever
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.mkfifo(elsewhere / "fifo")
    (inbox / "team" / "linked.wav.json").symlink_to(elsewhere / "fifo")
    for name in ("pipe.wav", "linked.wav"):
        tone_wav(inbox / "team" / name, 0.5)
    by = rows_for(watched, 2)
    tone_wav(inbox / "after.wav", 0.5)  # the watcher still records later files
    by = rows_for(watched, 3)
    assert by["after.wav"].status == PENDING
    for name in ("team/pipe.wav", "team/linked.wav"):
        row = by[name]
        assert (row.status, row.error_kind) == (FAILED, "bad_sidecar"), row.error_message
        assert "not a plain file" in row.error_message
        report = watched.settings.outbox / "team" / (Path(name).name + ".error.txt")
        assert wait_for(report.is_file, timeout=10)


@posix_only
def test_a_sidecar_linked_outside_the_inbox_is_never_read(watched: Running, tmp_path: Path) -> None:
    secret = tmp_path / "private.json"
    secret.write_text(json.dumps({"api_key_of_someone": "hunter2"}), encoding="utf-8")
    (watched.inbox).mkdir(parents=True, exist_ok=True)
    (watched.inbox / "talk.wav.json").symlink_to(secret)
    tone_wav(watched.inbox / "talk.wav", 0.5)
    row = rows_for(watched, 1)["talk.wav"]
    assert (row.status, row.error_kind) == (FAILED, "bad_sidecar")
    assert "api_key_of_someone" not in row.error_message and "hunter2" not in row.error_message
    report = watched.settings.outbox / "talk.wav.error.txt"
    wait_for(report.is_file, timeout=10)
    assert "api_key_of_someone" not in report.read_text(encoding="utf-8")


def test_deeply_nested_sidecar_json_fails_its_file(watched: Running) -> None:
    watched.inbox.mkdir(parents=True, exist_ok=True)
    (watched.inbox / "deep.wav.json").write_text("[" * 30_000 + "]" * 30_000, encoding="utf-8")
    tone_wav(watched.inbox / "deep.wav", 0.5)
    row = rows_for(watched, 1)["deep.wav"]
    assert (row.status, row.error_kind) == (FAILED, "bad_sidecar")
    assert "nested too deeply" in row.error_message


def test_a_language_whisper_does_not_know_fails_at_admission(watched: Running) -> None:
    watched.inbox.mkdir(parents=True, exist_ok=True)
    (watched.inbox / "zz.wav.json").write_text('{"language": "zz"}', encoding="utf-8")
    (watched.inbox / "zh.wav.json").write_text('{"language": "Chinese"}', encoding="utf-8")
    tone_wav(watched.inbox / "zz.wav", 0.5)
    tone_wav(watched.inbox / "zh.wav", 0.5)
    by = rows_for(watched, 2)
    assert (by["zz.wav"].status, by["zz.wav"].error_kind) == (FAILED, "bad_sidecar")
    assert "'zz'" in by["zz.wav"].error_message and by["zz.wav"].attempts == 1
    assert by["zh.wav"].status == PENDING and by["zh.wav"].language == "zh"


# --- names (issue 15.4 and 15.6) ------------------------------------------------------------------


@posix_only
def test_a_backslash_in_a_posix_name_moves_only_that_file(watched: Running) -> None:
    inbox = watched.inbox
    (inbox / "team").mkdir(parents=True)
    tone_wav(inbox / "team" / "talk.wav", 0.5)  # someone else's recording
    (inbox / "team" / "talk.wav.json").write_text("{}", encoding="utf-8")
    (inbox / "team\\talk.wav").write_text("not audio", encoding="utf-8")  # one odd file
    by = rows_for(watched, 2)
    odd = by["team\\talk.wav"]
    assert (odd.status, odd.error_kind) == (FAILED, "not_audio")
    assert by["team/talk.wav"].status == PENDING
    failed = watched.settings.failed
    wait_for(lambda: (failed / "team\\talk.wav").is_file(), timeout=10)
    assert (inbox / "team" / "talk.wav").is_file() and (inbox / "team" / "talk.wav.json").is_file()
    assert not (failed / "team").exists()
    # its report's name follows Windows' rules (no backslash) on every platform
    assert wait_for((watched.settings.outbox / "team_talk.wav.error.txt").is_file, timeout=10)
    watched.watcher.rescan()  # a restart's first scan: no new row for the odd file
    watched.watcher.check()
    assert len(watched.tasks()) == 2


@pytest.mark.parametrize("length", [250, 255])
def test_names_near_the_255_byte_limit_are_recorded_and_reported(
    watched: Running, length: int
) -> None:
    """A 251–255-byte name made the sidecar probe raise ENAMETOOLONG (no row at all); a 250-byte
    one failed a finished task because its report name was too long."""
    name = "录" * ((length - 4) // 3) + "a" * ((length - 4) % 3) + ".wav"
    assert len(name.encode()) == length
    watched.inbox.mkdir(parents=True, exist_ok=True)
    (watched.inbox / name).write_text("not audio", encoding="utf-8")
    row = rows_for(watched, 1)[name]
    assert (row.status, row.error_kind) == (FAILED, "not_audio")
    assert wait_for(lambda: (watched.settings.failed / name).is_file(), timeout=10)
    reports = wait_for(lambda: list(watched.settings.outbox.glob("*.error.txt")), timeout=10)
    wait_for(lambda: reports[0].stat().st_size > 0, timeout=10)
    assert len(reports) == 1 and len(reports[0].name.encode()) <= 255
    assert name in reports[0].read_text(encoding="utf-8")
    # and a good file of that length gets transcript names that fit
    stem = outputs.transcript_stem(watched.settings.outbox, Path(name).stem)
    assert len(f"{stem} (2).json".encode()) <= 255


@posix_only
def test_a_name_that_is_not_utf8_gets_a_failed_row_and_its_file_is_kept(watched: Running) -> None:
    watched.inbox.mkdir(parents=True, exist_ok=True)
    raw = os.path.join(os.fsencode(watched.inbox), b"meeting \xff\xfe.wav")
    with open(raw, "wb") as fh:
        fh.write(b"RIFF not really")
    row = rows_for(watched, 1)["meeting \\xff\\xfe.wav"]
    assert (row.status, row.error_kind, row.source_state) == (FAILED, "bad_name", "failed")
    kept = watched.settings.failed / "meeting \\xff\\xfe.wav"
    assert kept.read_bytes() == b"RIFF not really" and not os.path.lexists(raw)
    assert wait_for(lambda: (watched.settings.outbox / "meeting _xff_xfe.wav.error.txt")
                    .is_file(), timeout=10)  # Windows' naming rules: no backslash
    watched.watcher.rescan()
    watched.watcher.check()
    assert len(watched.tasks()) == 1


@posix_only
def test_a_link_dropped_into_the_inbox_is_refused_with_a_reason(
    watched: Running, tmp_path: Path
) -> None:
    private = tone_wav(tmp_path / "private.wav", 0.5)
    watched.inbox.mkdir(parents=True, exist_ok=True)
    (watched.inbox / "talk.wav").symlink_to(private)
    row = rows_for(watched, 1)["talk.wav"]
    assert (row.status, row.error_kind) == (FAILED, "link") and "link" in row.error_message
    assert private.is_file()  # the target is untouched; the link itself moved to failed/
    assert wait_for(lambda: os.path.islink(watched.settings.failed / "talk.wav"), timeout=10)


def gbk_tagged_mp3(path: Path) -> Path:
    """An MP3 whose ID3 title holds GBK bytes while claiming UTF-8 (Chinese recorders do)."""
    plain = convert(tone_wav(path.with_suffix(".src.wav"), 1.0), path.with_suffix(".plain.mp3"))
    data = plain.read_bytes()
    if data[:3] == b"ID3":  # drop the encoder's own tag
        size = data[6:10]
        data = data[10 + ((size[0] << 21) | (size[1] << 14) | (size[2] << 7) | size[3]):]
    body = b"\x03" + "会议记录".encode("gbk")  # encoding byte 3 = UTF-8, but the bytes are GBK
    frame = b"TIT2" + struct.pack(">I", len(body)) + b"\x00\x00" + body
    n = len(frame)
    syncsafe = bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])
    path.write_bytes(b"ID3\x03\x00\x00" + syncsafe + frame + data)
    plain.unlink()
    path.with_suffix(".src.wav").unlink()
    return path


def test_tags_that_are_not_utf8_do_not_stop_a_file(watched: Running) -> None:
    watched.inbox.mkdir(parents=True, exist_ok=True)
    gbk_tagged_mp3(watched.inbox / "会议.mp3")
    row = rows_for(watched, 1)["会议.mp3"]
    assert row.status == PENDING, row.error_message
    assert row.audio_seconds == pytest.approx(1.0, abs=0.1)


# --- folders (issue 15.5) ------------------------------------------------------------------------


@posix_only
def test_an_inbox_given_through_a_link_with_the_archive_inside_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real-inbox"
    real.mkdir()
    (tmp_path / "inbox-link").symlink_to(real, target_is_directory=True)
    path = write_settings(tmp_path / "cfg", {"paths": {
        "inbox": str(tmp_path / "inbox-link"), "archive": str(real / "done")}})
    with pytest.raises(SettingsError, match="paths.archive .* is inside paths.inbox"):
        load_settings(path)


# --- swaps while a task runs (issue 15.3) --------------------------------------------------------


@pytest.fixture
def job_env(tmp_path: Path, models_dir: Path):
    """The parent's view (settings, queue, dispatcher) to build a real worker job."""
    s = load_settings(write_settings(tmp_path / "svc", {
        "models": {"dir": str(models_dir), "default": "tiny.en", "allow_download": False},
        "gpu": {"devices": "none"}, "transcribe": {"output_formats": ["txt", "json"]},
    }))
    db.migrate(s.database_url)
    q = TaskQueue(db.make_engine(s.database_url), SystemClock())
    d = scheduler.Dispatcher(s, q, SystemClock(), None, on_settled=lambda task: None)
    yield s, q, d
    q.engine.dispose()


def started_job(s, q: TaskQueue, d: scheduler.Dispatcher, rel: str):
    src = s.inbox / rel
    st = src.stat()
    task = q.enqueue(NewTask(source=rel, size=st.st_size, mtime_ns=st.st_mtime_ns,
                             model="tiny.en", audio_seconds=1.0))
    task = q.claim(task.id, d.worker_id, 60, device="cpu")
    return jobs.job_for(s, q, task, None, None)  # the parent's checks, as at the start


def run_worker(job) -> None:
    from service import worker

    parent, child = multiprocessing.Pipe()
    try:
        worker.run(job, child)
    finally:
        parent.close()
        child.close()


@posix_only
@pytest.mark.slow
def test_an_output_folder_swapped_for_a_link_mid_task_is_never_written_through(
    job_env, tmp_path: Path
) -> None:
    s, q, d = job_env
    tone_wav(s.inbox / "team" / "talk.wav", 1.0)
    (s.outbox / "team").mkdir(parents=True)
    job = started_job(s, q, d, "team/talk.wav")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "talk.txt").write_text("someone else's notes", encoding="utf-8")
    (s.outbox / "team").rmdir()
    (s.outbox / "team").symlink_to(elsewhere, target_is_directory=True)  # after the start
    with pytest.raises(fsops.UnsafePathError):
        run_worker(job)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["talk.txt"]
    assert (elsewhere / "talk.txt").read_text(encoding="utf-8") == "someone else's notes"


@posix_only
@pytest.mark.slow
def test_a_source_swapped_for_a_link_to_a_private_file_is_never_read(
    job_env, tmp_path: Path
) -> None:
    s, q, d = job_env
    tone_wav(s.inbox / "talk.wav", 1.0)
    job = started_job(s, q, d, "talk.wav")
    private = tone_wav(tmp_path / "private.wav", 2.0)
    (s.inbox / "talk.wav").unlink()
    (s.inbox / "talk.wav").symlink_to(private)  # after the task started
    with pytest.raises(fsops.NotRegularFileError):
        run_worker(job)
    assert not any(s.outbox.rglob("talk.*"))


# --- a file overwritten while it is processed (issue 15.7) ----------------------------------------


def test_a_file_overwritten_while_processing_is_kept_and_queued_again(watched: Running) -> None:
    watched.inbox.mkdir(parents=True, exist_ok=True)
    src = tone_wav(watched.inbox / "talk.wav", 0.5)
    [row] = rows_for(watched, 1).values()
    q = watched.queue
    q.claim(row.id, "h:1", 60)
    q.start_processing(row.id, "h:1", 0.1)
    tone_wav(src, 1.5, freq=300)  # a new recording under the same name, in place
    new_size = src.stat().st_size
    done = q.complete(row.id, "h:1", transcribe_seconds=1.0, outputs=[])
    outcome.settle(watched.settings, q, done)
    assert src.stat().st_size == new_size  # the new recording stays in the inbox …
    assert not (watched.settings.archive / "talk.wav").exists()  # … and is not archived
    assert q.get(row.id).status == COMPLETED and q.get(row.id).source_state == "replaced"
    watched.watcher.rescan()  # the service's periodic rescan
    again = wait_for(lambda: [t for t in watched.tasks() if t.id != row.id], timeout=30)
    assert [(t.status, t.size) for t in again] == [(PENDING, new_size)]
