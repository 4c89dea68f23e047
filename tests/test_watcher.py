"""The inbox watcher with a real watchdog observer on a temp folder and a real SQLite queue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from service import db, fsops
from service.clock import SystemClock
from service.config import load_settings
from service.tables import FAILED, PENDING
from service.tasks import TaskQueue
from service.watcher import InboxWatcher
from tests.conftest import write_settings
from tests.speech import tone_wav, wait_for


class Running:
    """A watcher plus the tick loop the service's scheduler would run."""

    def __init__(self, tmp_path: Path, opener=None, **watcher_cfg) -> None:  # noqa: ANN001
        cfg = {"stable_seconds": 1.0, "rescan_seconds": 30, **watcher_cfg}
        self.settings = load_settings(
            write_settings(tmp_path, {"watcher": cfg, "models": {"default": "tiny.en"}})
        )
        db.migrate(self.settings.database_url)
        self.queue = TaskQueue(db.make_engine(self.settings.database_url), SystemClock())
        self.rejected: list = []
        self.watcher = InboxWatcher(self.settings, self.queue, SystemClock(), self.rejected.append,
                                    opener=opener)
        self.inbox = self.settings.inbox
        self._stop = threading.Event()
        self.watcher.start()
        self.watcher.rescan()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self.watcher.check()

    def tasks(self) -> list:
        return self.queue.list(limit=1000)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.watcher.stop()
        self.queue.engine.dispose()


@pytest.fixture
def running(tmp_path: Path):
    r = Running(tmp_path)
    yield r
    r.close()


def test_new_file_in_a_chinese_subfolder_becomes_one_pending_task(running: Running) -> None:
    folder = running.inbox / "会议" / "周一"
    folder.mkdir(parents=True)
    tone_wav(folder / "会议 记录 1.wav", 1.5)
    [task] = wait_for(running.tasks, timeout=15)
    assert task.status == PENDING and task.source == "会议/周一/会议 记录 1.wav"
    assert task.audio_seconds == pytest.approx(1.5, abs=0.05) and task.model == "tiny.en"
    time.sleep(2.5)  # seen again by events and rescans: still exactly one task
    running.watcher.rescan()
    time.sleep(1.5)
    assert len(running.tasks()) == 1


def test_slowly_copied_file_is_not_started_before_it_is_complete(running: Running) -> None:
    src = tone_wav(running.inbox.parent / "whole.wav", 20.0)
    data = src.read_bytes()
    target = running.inbox / "slow.wav"
    chunks = 20
    step = len(data) // chunks + 1
    with open(target, "wb") as f:  # ~20 s of writing, like a slow network copy
        for i in range(chunks):
            f.write(data[i * step:(i + 1) * step])
            f.flush()
            os.fsync(f.fileno())
            time.sleep(1.0)
            assert running.tasks() == [], f"admitted after {i + 1} of {chunks} chunks"
    [task] = wait_for(running.tasks, timeout=15)
    assert task.size == len(data) and task.audio_seconds == pytest.approx(20.0, abs=0.1)


def test_ignored_and_non_audio_names_are_never_picked_up(running: Running) -> None:
    for name in ("a.wav.part", "b.tmp", "~$c.wav", ".hidden.wav", "notes.txt", "d.wav.json"):
        (running.inbox / name).write_bytes(b"x" * 100)
    (running.inbox / ".cache").mkdir()
    tone_wav(running.inbox / ".cache" / "e.wav", 0.5)
    tone_wav(running.inbox / "real.wav", 0.5)
    wait_for(running.tasks, timeout=15)
    time.sleep(2)
    assert [t.source for t in running.tasks()] == ["real.wav"]


def test_text_file_named_mp3_fails_at_once_with_a_plain_reason(running: Running) -> None:
    (running.inbox / "fake.mp3").write_text("this is not audio", encoding="utf-8")
    [task] = wait_for(running.tasks, timeout=15)
    assert task.status == FAILED and task.error_kind == "not_audio"
    assert "not an audio or video file" in task.error_message
    rejected = wait_for(lambda: running.rejected, timeout=5)
    assert rejected[0].id == task.id


def test_sidecar_and_model_subfolder_pick_the_options(running: Running) -> None:
    (running.inbox / "base").mkdir()
    tone_wav(running.inbox / "base" / "by_folder.wav", 0.5)
    tone_wav(running.inbox / "with_sidecar.wav", 0.5)
    (running.inbox / "with_sidecar.wav.json").write_text(
        json.dumps({"model": "small", "language": "zh", "priority": 7,
                    "initial_prompt": "会议", "output_formats": ["txt", "srt"]}),
        encoding="utf-8",
    )
    tasks = wait_for(lambda: len(running.tasks()) == 2 and running.tasks(), timeout=15)
    by = {t.source: t for t in tasks}
    assert by["base/by_folder.wav"].model == "base"
    side = by["with_sidecar.wav"]
    assert (side.model, side.language, side.priority) == ("small", "zh", 7)
    assert side.options == {"initial_prompt": "会议", "output_formats": ["txt", "srt"]}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"model": "gigantic-v9"}), "not known"),
        (json.dumps({"output_dir": "../../x"}), "unknown key"),
        (json.dumps({"priority": "high"}), "priority"),
    ],
)
def test_bad_sidecar_fails_that_task_with_a_clear_reason(
    running: Running, content: str, needle: str
) -> None:
    tone_wav(running.inbox / "x.wav", 0.5)
    (running.inbox / "x.wav.json").write_text(content, encoding="utf-8")
    [task] = wait_for(running.tasks, timeout=15)
    assert task.status == FAILED and task.error_kind == "bad_sidecar"
    assert needle in task.error_message


def test_rename_into_the_inbox_counts_as_new(running: Running, tmp_path: Path) -> None:
    outside = tone_wav(tmp_path / "outside.wav", 0.5)
    os.rename(outside, running.inbox / "moved in.wav")
    [task] = wait_for(running.tasks, timeout=15)
    assert task.source == "moved in.wav"


def test_files_present_before_start_are_found_by_the_first_scan(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    tone_wav(inbox / "early.wav", 0.5)
    r = Running(tmp_path)
    try:
        [task] = wait_for(r.tasks, timeout=15)
        assert task.source == "early.wav"
    finally:
        r.close()


def test_polling_observer_works_too(tmp_path: Path) -> None:
    r = Running(tmp_path, polling=True)
    try:
        tone_wav(r.inbox / "polled.wav", 0.5)
        [task] = wait_for(r.tasks, timeout=20)
        assert task.source == "polled.wav"
    finally:
        r.close()


def test_a_changed_file_with_the_same_name_later_gives_a_new_task(running: Running) -> None:
    tone_wav(running.inbox / "same.wav", 0.5)
    [first] = wait_for(running.tasks, timeout=15)
    # the service would archive it after completion; here we finish it by hand
    running.queue.claim(first.id, "h:1", 60)
    running.queue.start_processing(first.id, "h:1", 0)
    running.queue.complete(first.id, "h:1")
    running.queue.set_source_state(first.id, "archived")
    (running.inbox / "same.wav").unlink()
    time.sleep(0.5)
    tone_wav(running.inbox / "same.wav", 0.8)
    tasks = wait_for(lambda: len(running.tasks()) == 2 and running.tasks(), timeout=15)
    assert tasks[0].audio_seconds == pytest.approx(0.8, abs=0.05)


def test_rescan_during_a_burst_of_admissions_never_fails(tmp_path: Path) -> None:
    """The dispatch thread records files (adds to the admitted set) while the rescan job walks
    it: 'dictionary changed size during iteration' in a 10,000-file burst (issue 15)."""
    r = Running(tmp_path, stable_seconds=0.5)
    try:
        for i in range(600):
            (r.inbox / f"{i:04d}.wav").write_text("not audio", encoding="utf-8")
        errors: list[BaseException] = []
        stop = threading.Event()

        def rescans() -> None:
            while not stop.is_set():
                try:
                    r.watcher.rescan()
                except BaseException as err:  # noqa: BLE001 - the test reports it
                    errors.append(err)
                    return

        t = threading.Thread(target=rescans)
        t.start()
        try:
            wait_for(lambda: r.queue.counts()["failed"] == 600 or errors, timeout=300)
        finally:
            stop.set()
            t.join()
        assert errors == []
    finally:
        r.close()


COPIER = """
import pathlib, sys, time
src, dst, go = sys.argv[1:4]
data = pathlib.Path(src).read_bytes()
with open(dst, "wb") as f:
    f.write(data[: len(data) // 2])
    f.flush()
    print("stalled", flush=True)
    while not pathlib.Path(go).exists():
        time.sleep(0.05)
    f.write(data[len(data) // 2:])
"""


def windows_like_opener(holder: psutil.Process):  # noqa: ANN201
    """Windows' exclusive open, simulated: a file another process has open is a sharing
    violation (Linux lets anyone open it). The same function the service calls, injected."""
    def opener(path: str) -> None:
        try:
            held = any(f.path == path for f in holder.open_files())
        except psutil.NoSuchProcess:
            held = False
        if held:
            raise PermissionError(13, "The process cannot access the file because it is being "
                                  "used by another process", path)
        fsops.default_opener()(path)
    return opener


def test_a_copy_that_stalls_while_held_waits_then_completes(tmp_path: Path) -> None:
    """A network/USB copy stalls past stable_seconds with the file still open: it is not
    stable yet (before: probed half-written and failed for good)."""
    src = tone_wav(tmp_path / "whole.wav", 4.0)
    target_dir = tmp_path / "svc" / "inbox"
    target_dir.mkdir(parents=True)
    target, go = target_dir / "usb copy.wav", tmp_path / "go"
    copier = subprocess.Popen([sys.executable, "-c", COPIER, str(src), str(target), str(go)],
                              stdout=subprocess.PIPE)
    assert copier.stdout.readline().strip() == b"stalled"
    r = Running(tmp_path / "svc", opener=windows_like_opener(psutil.Process(copier.pid)))
    try:
        wait_for(lambda: target in r.watcher._held, timeout=30)  # stable, but still held
        time.sleep(r.settings.watcher.stable_seconds * 1.5)  # a pause: nothing is admitted
        assert r.tasks() == [] and r.rejected == []
        go.touch()  # the copy resumes and the copier closes the file
        assert copier.wait(timeout=30) == 0
        [task] = wait_for(r.tasks, timeout=30)
        assert task.status == PENDING and task.size == src.stat().st_size
        assert task.audio_seconds == pytest.approx(4.0, abs=0.05)
        assert target not in r.watcher._held
    finally:
        go.touch()
        copier.wait(timeout=30)
        copier.stdout.close()
        r.close()


def test_a_file_held_past_the_limit_fails_with_a_clear_reason(tmp_path: Path) -> None:
    def always_held(path: str) -> None:
        raise PermissionError(13, "being used by another process", path)

    r = Running(tmp_path, opener=always_held, held_timeout_seconds=2)
    try:
        tone_wav(r.inbox / "会议.wav", 1.0)
        [task] = wait_for(r.tasks, timeout=30)
        assert (task.status, task.error_kind) == (FAILED, "held")
        assert "kept the file open for more than 2 s" in task.error_message
        assert "being used by another process" in task.error_message
        assert r.rejected and r.rejected[0].id == task.id  # settled: report, move (outcome)
    finally:
        r.close()
