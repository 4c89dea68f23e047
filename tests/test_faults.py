"""Breaking things on purpose, through the real service: hostile input, kill -9, bursts,
environment faults. Nothing may be lost, nothing done twice, and the service keeps running."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import av
import numpy as np
import psutil
import pytest

from service import db
from service.tasks import TaskQueue
from tests.speech import convert, silence_wav, speak_wav, talk_wav, tone_wav, wait_for
from tests.svc import ServiceProcess, app, service_settings

pytestmark = pytest.mark.slow


def final(svc: ServiceProcess, n: int, timeout: float = 300) -> list:
    def done():
        rows = svc.tasks()
        return len(rows) >= n and all(r.status in ("completed", "failed") for r in rows) and rows

    return wait_for(done, timeout=timeout, interval=1.0)


def video_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(
                np.full((48, 64, 3), i * 20, dtype=np.uint8), format="rgb24"
            )
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def test_bad_input_corpus_gets_clear_reasons_and_nothing_is_lost(
    tmp_path: Path, models_dir: Path
) -> None:
    svc = ServiceProcess(service_settings(tmp_path, models_dir,
                                          transcribe={"max_audio_seconds": 20}))
    inbox, s = svc.settings.inbox, svc.settings
    staging = tmp_path / "staging"
    mp3 = convert(speak_wav("Hello there.", staging / "hello.wav"), staging / "hello.mp3")
    long_name = "长" * 70 + " recording.wav"  # 224 bytes of UTF-8
    bad = {  # name → (expected kind, words in the reason)
        "empty.mp3": ("not_audio", "empty"),
        "truncated.mp3": ("not_audio", "damaged or truncated"),
        "text.wav": ("not_audio", "not an audio or video file"),
        "video only.mp4": ("not_audio", "no audio stream"),
        "too long.wav": ("too_long", "limit is"),
        "bad json.wav": ("bad_sidecar", "not valid JSON"),
        "unknown model.wav": ("bad_sidecar", "not known"),
        "path trick.wav": ("bad_sidecar", "unknown key"),
    }
    good = ["会议 🎉 it's 100% done; ok.wav", long_name, "x.mp3/inside a folder.wav"]
    try:
        (inbox / "empty.mp3").write_bytes(b"")
        (inbox / "truncated.mp3").write_bytes(mp3.read_bytes()[:300])
        (inbox / "text.wav").write_text("meeting notes, not sound", encoding="utf-8")
        video_only(inbox / "video only.mp4")
        tone_wav(inbox / "too long.wav", 30)
        for name, sidecar in [("bad json.wav", "{oops"),
                              ("unknown model.wav", json.dumps({"model": "huge-v9"})),
                              ("path trick.wav", json.dumps({"output": "../../x"}))]:
            (inbox / (name + ".json")).write_text(sidecar, encoding="utf-8")
            silence_wav(inbox / name, 1)
        (inbox / "x.mp3").mkdir()  # a folder with an audio-like name is just a folder
        for name in good:
            silence_wav(inbox / name, 1)
        rows = final(svc, len(bad) + len(good))
        assert svc.proc.poll() is None  # the service kept running through all of it
    finally:
        assert svc.stop() == 0, svc.output()[-3000:]
    by = {r.source: r for r in rows}
    assert set(by) == set(bad) | set(good)
    for name, (kind, words) in bad.items():
        row = by[name]
        assert (row.status, row.error_kind) == ("failed", kind), (name, row.error_message)
        assert words in row.error_message, (name, row.error_message)
        assert (s.failed / name).exists() and not (inbox / name).exists()
        report = (s.outbox / (Path(name).name + ".error.txt")).read_text(encoding="utf-8")
        assert name in report and words in report
        assert by[name].attempts == 1  # no retries for input that can never work
    assert (s.failed / "bad json.wav.json").is_file()  # the sidecar travels with its file
    for name in good:
        assert by[name].status == "completed", (name, by[name].error_message)
        assert (s.archive / name).is_file()
        stem = Path(name).stem
        assert (s.outbox / Path(name).parent / (stem + ".json")).is_file()
    assert (inbox / "x.mp3").is_dir()


def all_done(svc: ServiceProcess, n: int) -> bool:
    rows = svc.tasks()
    return len(rows) == n and all(t.status == "completed" for t in rows)


def busy_or_done(svc: ServiceProcess, states: tuple[str, ...], n: int) -> bool:
    return any(t.status in states for t in svc.tasks()) or all_done(svc, n)


def claimed_since(svc: ServiceProcess, since: datetime, n: int) -> bool:
    """A task was claimed by the restarted service (recovered work is running again)."""
    return any(t.claimed_at and t.claimed_at > since for t in svc.tasks()) or all_done(svc, n)


def worker_of(svc: ServiceProcess) -> psutil.Process | None:
    """The one worker process running a task (forked from the service's forkserver)."""
    workers = [p for p in psutil.Process(svc.proc.pid).children(recursive=True)
               if p.parent() is not None and "forkserver" in " ".join(p.parent().cmdline())]
    return workers[0] if len(workers) == 1 else None


def test_kill_dash_nine_at_random_moments_loses_nothing_and_spends_no_attempt(
    tmp_path: Path, models_dir: Path
) -> None:
    """A dead service is never the file's fault: with max_attempts 2, five kill -9 of the
    service complete every file with its attempts unchanged; the one worker killed alone
    (the service alive) spends exactly one attempt."""
    settings = service_settings(tmp_path, models_dir, scheduler={"max_attempts": 2})
    rng = random.Random(11)
    svc = ServiceProcess(settings)
    names = [f"talk {i}.wav" for i in range(6)]
    # ~8 s of varied speech: long enough to be killed mid-way (tiled speech is slow to decode)
    speech = speak_wav("Every file must arrive exactly once. The service may crash, the power "
                       "may fail, and the machine may restart at night, but no recording is "
                       "ever lost.", tmp_path / "speech.wav")
    for name in names:
        shutil.copy(speech, svc.settings.inbox / name)
    # first, a worker dies alone (segfault, killed by someone): that attempt is spent
    wait_for(partial(busy_or_done, svc, ("processing",), len(names)), timeout=120)
    victim = next(t for t in svc.tasks() if t.status == "processing")
    wait_for(partial(worker_of, svc), timeout=30).kill()
    wait_for(lambda: svc.queue.get(victim.id).attempts == 1, timeout=60)
    assert svc.queue.get(victim.id).error_kind == "worker_crashed"
    cycles = 0
    orphans_checked = 0
    restart_to_running: list[float] = []
    while cycles < 5:
        # wait until a worker is actually processing, then kill at a random moment
        wait_for(partial(busy_or_done, svc, ("processing",), len(names)), timeout=120)
        if all_done(svc, len(names)):
            break
        time.sleep(rng.uniform(0.0, 1.5))
        children = psutil.Process(svc.proc.pid).children(recursive=True)
        svc.proc.send_signal(signal.SIGKILL)
        svc.proc.wait()
        svc.log.close()
        svc.queue.engine.dispose()
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], f"orphan workers after kill -9: {alive}"
        orphans_checked += len(children)
        cycles += 1
        restarted = time.monotonic()
        restart_utc = datetime.now(timezone.utc).replace(tzinfo=None)
        svc = ServiceProcess(settings)
        wait_for(partial(claimed_since, svc, restart_utc, len(names)), timeout=60)
        restart_to_running.append(time.monotonic() - restarted)
    try:
        rows = final(svc, len(names), timeout=300)
        # When every file was already done before the last restart, the new service may still
        # be starting Python: a SIGINT then ends it before it can stop cleanly (exit -2).
        wait_for(svc.running, timeout=60)
    finally:
        assert svc.stop() == 0
    assert cycles == 5, "the files finished before five kill cycles"
    assert orphans_checked > 0
    assert sorted(r.source for r in rows) == sorted(names)  # one row per file: none twice
    assert all(r.status == "completed" for r in rows)
    s = svc.settings
    assert not [p for p in s.failed.rglob("*") if p.is_file()]
    assert {r.source: r.attempts for r in rows} == {
        r.source: int(r.id == victim.id) for r in rows}  # only the lone worker's death counted
    for name in names:
        assert (s.archive / name).is_file() and not (s.inbox / name).exists()
        stem = Path(name).stem
        outs = sorted(p.name for p in s.outbox.iterdir() if p.name.startswith(stem + "."))
        assert outs == [f"{stem}.{ext}" for ext in ("json", "srt", "txt", "vtt")]
    assert not list(s.archive.glob("* (2).wav"))  # never archived twice
    assert not [p for p in s.outbox.rglob("*.tmp")]
    q = TaskQueue(db.make_engine(s.database_url))
    interrupted = [e for r in rows for e in q.events(r.id)
                   if e.detail and e.detail.startswith("interrupted")]
    assert interrupted, "the event log shows no recovery"
    crashes = sum(r.crash_retries for r in rows)
    print(f"kill cycles {cycles}, workers checked {orphans_checked}, crash requeues {crashes}, "
          f"restart→running {[round(x, 1) for x in restart_to_running]} s")


def test_a_burst_of_a_thousand_files_all_end_final_exactly_once(
    tmp_path: Path, models_dir: Path
) -> None:
    settings = service_settings(tmp_path, models_dir, watcher={"stable_seconds": 1.0,
                                                               "rescan_seconds": 5})
    svc = ServiceProcess(settings)
    inbox = svc.settings.inbox
    try:
        for i in range(990):  # volume: audio names, not audio (fail fast, need no model)
            folder = inbox / f"batch{i % 10}"
            folder.mkdir(exist_ok=True)
            (folder / f"note {i}.mp3").write_bytes(b"not audio " * 10)
        for i in range(10):
            silence_wav(inbox / f"real {i}.wav", 1)
        rows = final(svc, 1000, timeout=600)
    finally:
        assert svc.stop() == 0
    assert len(rows) == 1000 and len({r.source for r in rows}) == 1000
    assert sum(r.status == "completed" for r in rows) == 10
    s = svc.settings
    assert len(list(s.failed.rglob("*.mp3"))) == 990 and len(list(s.archive.glob("*.wav"))) == 10
    assert not [p for p in inbox.rglob("*") if p.is_file()]


def test_unwritable_outbox_retries_then_fails_without_partial_output(
    tmp_path: Path, models_dir: Path
) -> None:
    settings = service_settings(tmp_path, models_dir, scheduler={"max_attempts": 2})
    svc = ServiceProcess(settings)
    s = svc.settings
    try:
        (s.outbox / "blocked").write_text("a FILE where the folder should be", encoding="utf-8")
        (s.inbox / "blocked").mkdir()
        silence_wav(s.inbox / "blocked" / "a.wav", 1)
        [row] = final(svc, 1, timeout=180)
    finally:
        assert svc.stop() == 0
    assert row.status == "failed" and row.error_kind == "io_error" and row.attempts == 2
    assert (s.failed / "blocked" / "a.wav").is_file()  # moved only after the last attempt
    assert not [p for p in s.outbox.rglob("*") if p.suffix in (".txt", ".srt", ".tmp")]


def test_database_locked_by_someone_else_makes_the_service_wait_not_fail(
    tmp_path: Path, models_dir: Path
) -> None:
    svc = ServiceProcess(service_settings(tmp_path, models_dir))
    s = svc.settings
    try:
        holder = sqlite3.connect(s.sqlite_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # like a person in the sqlite3 shell mid-write
        silence_wav(s.inbox / "during lock.wav", 1)
        time.sleep(8)  # the watcher and dispatcher wait on busy_timeout meanwhile
        assert svc.proc.poll() is None
        holder.execute("ROLLBACK")
        holder.close()
        [row] = final(svc, 1, timeout=120)
        assert row.status == "completed" and svc.proc.poll() is None
    finally:
        assert svc.stop() == 0


def test_corrupt_model_file_fails_with_a_clear_reason(tmp_path: Path, models_dir: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "broken.pt").write_bytes(b"\x80\x04 this is not a checkpoint")
    svc = ServiceProcess(service_settings(tmp_path, models, models={"default": "broken"}))
    try:
        silence_wav(svc.settings.inbox / "a.wav", 1)
        [row] = final(svc, 1, timeout=120)
    finally:
        assert svc.stop() == 0
    assert row.status == "failed" and row.error_kind == "model_missing"
    assert "broken.pt" in row.error_message
    # the worker's own log record reached the service's log file over its pipe
    text = (svc.settings.logs / "dropscribe.log").read_text(encoding="utf-8")
    assert "service.worker: worker " in text and "loading model broken" in text
    status = app(svc.settings_path, "status")
    assert "broken.pt" in status.stdout


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A real 512 KiB filesystem (tmpfs) that we can fill up: needs root, as in CI."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "small disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_while_writing_leaves_no_partial_transcript(
    tmp_path: Path, models_dir: Path, tiny_disk: Path
) -> None:
    outbox = tiny_disk / "outbox"
    settings = service_settings(tmp_path, models_dir, scheduler={"max_attempts": 2},
                                paths={"outbox": str(outbox)})
    svc = ServiceProcess(settings)
    s = svc.settings
    try:
        filler = tiny_disk / "filler"
        with open(filler, "wb", buffering=0) as f:  # fill it up: no transcript can fit
            try:
                while True:
                    f.write(b"\0" * 1024)
            except OSError:
                pass
        speak_wav("This transcript will not fit on the disk.", s.inbox / "full.wav")
        [row] = final(svc, 1, timeout=180)
        assert svc.proc.poll() is None
    finally:
        assert svc.stop() == 0
    assert row.status == "failed" and row.error_kind == "io_error" and row.attempts == 2
    assert "No space left on device" in row.error_message
    assert (s.failed / "full.wav").is_file()
    leftovers = [p.name for p in outbox.rglob("*") if p.is_file()]
    assert not [n for n in leftovers if n.endswith((".txt", ".srt", ".vtt", ".json", ".tmp"))]


def test_file_deleted_before_it_is_processed_has_a_clear_outcome(
    tmp_path: Path, models_dir: Path
) -> None:
    """The only slot is kept busy by a recording far longer than the test needs, and freed by
    the test itself (cancelled, as a user would) once the second file is gone: the test waits
    for states, never for a transcription to finish, so a slow machine cannot fail it."""
    settings = service_settings(tmp_path, models_dir, cpu={"max_concurrent_tasks": 1})
    svc = ServiceProcess(settings)
    s = svc.settings
    try:
        talk_wav(tmp_path / "busy.wav", 600).rename(s.inbox / "busy.wav")  # holds the slot
        busy = wait_for(lambda: next((t for t in svc.tasks() if t.status == "processing"),
                                     None), timeout=120)
        silence_wav(s.inbox / "vanishing.wav", 1)
        waiting = wait_for(lambda: next((t for t in svc.tasks()
                                         if t.source == "vanishing.wav"), None), timeout=60)
        (s.inbox / "vanishing.wav").unlink()  # the user changes their mind
        assert svc.queue.get(waiting.id).status == "pending"  # still behind the busy slot
        assert svc.queue.get(busy.id).status == "processing"
        assert app(settings, "cancel", str(busy.id)).returncode == 0  # frees the slot
        gone = wait_for(lambda: (t := svc.queue.get(waiting.id)).status == "failed"
                        and t.source_state != "inbox" and t, timeout=240)  # settled
        stopped = svc.queue.get(busy.id)
    finally:
        assert svc.stop() == 0
    assert "no longer there" in gone.error_message
    assert gone.source_state == "missing" and gone.attempts == 1
    assert stopped.status == "cancelled"
    assert (s.inbox / "busy.wav").is_file()  # a cancelled file stays where it was


def test_a_transcript_path_too_long_for_linux_fails_with_a_reason_and_nothing_lost(
    tmp_path: Path, models_dir: Path
) -> None:
    """An outbox deep enough that outbox/<folder>/<name>.txt passes Linux's 4095-byte PATH_MAX
    (the inbox path itself is fine): refused before any work, the file kept in failed/, the
    report in the outbox's top folder (beside the transcript it could not be written)."""
    outbox = tmp_path.joinpath(*["d" * 250] * 15)  # about 3.8 KB deep
    settings = service_settings(tmp_path, models_dir, paths={"outbox": str(outbox)},
                                scheduler={"max_attempts": 1})
    svc = ServiceProcess(settings)
    s = svc.settings
    rel = "会议" * 40 + "/" + "记录" * 40 + ".wav"  # 240 + 244 bytes
    try:
        (s.inbox / rel).parent.mkdir(parents=True)
        silence_wav(tmp_path / "x.wav", 1).rename(s.inbox / rel)
        [row] = final(svc, 1, timeout=120)
        assert svc.proc.poll() is None  # the service runs on
        report = wait_for(lambda: [p for p in outbox.iterdir()
                                   if p.name.endswith(".error.txt")], timeout=30)
    finally:
        assert svc.stop() == 0
    assert (row.status, row.error_kind, row.attempts) == ("failed", "path_too_long", 1)
    assert "4095" in row.error_message and "bytes" in row.error_message
    assert (s.failed / rel).is_file() and not (s.inbox / rel).exists()  # nothing lost
    text = report[0].read_text(encoding="utf-8")
    assert "allows 4095" in text and "记录" in text and "Use shorter folder" in text


BROKEN_TORCH = (  # what a damaged Windows torch install raises at import
    'raise OSError(126, "[WinError 126] The specified module could not be found. Error "\n'
    '              "loading torch\\\\lib\\\\c10.dll or one of its dependencies.")\n'
)


def test_a_worker_that_cannot_start_says_why_in_the_service_log(
    tmp_path: Path, models_dir: Path
) -> None:
    """A broken torch install (the c10.dll error of a damaged Windows environment): before,
    a service's worker stderr went nowhere and the user saw only "exit code 1"."""
    broken = tmp_path / "broken"
    (broken / "torch").mkdir(parents=True)
    (broken / "torch" / "__init__.py").write_text(BROKEN_TORCH, encoding="utf-8")
    path = os.pathsep.join([str(broken), *filter(None, [os.environ.get("PYTHONPATH")])])
    svc = ServiceProcess(service_settings(tmp_path, models_dir, scheduler={"max_attempts": 1}),
                         env={"PYTHONPATH": path})
    log_file = svc.settings.logs / "dropscribe.log"
    try:
        silence_wav(svc.settings.inbox / "a.wav", 1)
        [row] = final(svc, 1, timeout=180)
        assert svc.proc.poll() is None  # the service runs on
    finally:
        assert svc.stop() == 0, svc.output()[-3000:]
    assert (row.status, row.error_kind) == ("failed", "worker_start")
    assert "c10.dll" in row.error_message and "could not start" in row.error_message
    text = log_file.read_text(encoding="utf-8")
    said = [line for line in text.splitlines() if " ERROR " in line
            and "service.pool: The worker process could not start" in line]
    assert len(said) == 1 and "c10.dll" in said[0], said  # logged at ERROR once, not per spawn
    report = (svc.settings.outbox / "a.wav.error.txt").read_text(encoding="utf-8")
    assert "c10.dll" in report
