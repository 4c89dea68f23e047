"""The queue as the web page shows it: start order, expected starts from the calibrated
real-time factors, a smoothed ETA, and the searchable, paged history (real SQLite, manual clock)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from service import queueview
from service.config import Settings
from service.tasks import NewTask, TaskQueue

W = "node:1"


def finished(q: TaskQueue, source: str, audio: float, work: float, load: float,
             model: str = "tiny.en") -> int:
    t = q.enqueue(NewTask(source=source, size=1, mtime_ns=1, model=model, audio_seconds=audio))
    q.claim(t.id, W, 3600, device="cpu")
    q.start_processing(t.id, W, load_seconds=load)
    q.complete(t.id, W, transcribe_seconds=work, outputs=[f"/o/{source}.txt", f"/o/{source}.srt"])
    return t.id


def test_expected_starts_and_time_left_from_calibrated_rates(queue: TaskQueue, clock) -> None:
    finished(queue, "old1.wav", audio=100, work=20, load=2)  # real-time factor 0.2, load 2 s
    finished(queue, "old2.wav", audio=100, work=20, load=2)
    running = queue.enqueue(NewTask(source="now.wav", size=1, mtime_ns=1, model="tiny.en",
                                    audio_seconds=100))
    queue.claim(running.id, W, 3600, device="cpu")
    queue.start_processing(running.id, W, load_seconds=2)
    clock.advance(10)  # 10 s of its forecast 20 s of transcription done
    queue.set_progress(running.id, W, 0.5)
    low = queue.enqueue(NewTask(source="low.wav", size=1, mtime_ns=1, model="tiny.en",
                                audio_seconds=50, priority=-1))
    first = queue.enqueue(NewTask(source="a.wav", size=1, mtime_ns=1, model="tiny.en",
                                  audio_seconds=50))
    urgent = queue.enqueue(NewTask(source="urgent.wav", size=1, mtime_ns=1, model="tiny.en",
                                   audio_seconds=50, priority=5))

    data = queueview.overview(Settings(), queue, "en", slots=1)
    assert [r["id"] for r in data["running"]] == [running.id]
    r = data["running"][0]
    assert r["eta_seconds"] == pytest.approx(10.0) and r["progress"] == 0.5
    # dispatcher order: priority first, then oldest; each takes 2 s load + 0.2 × 50 s
    assert [p["id"] for p in data["pending"]] == [urgent.id, first.id, low.id]
    assert [p["start_in_seconds"] for p in data["pending"]] == [10.0, 22.0, 34.0]
    assert data["waiting"] == 3 and data["left_seconds"] == 46
    assert data["now"].endswith("Z") and data["pending"][0]["created"].endswith("Z")

    two = queueview.overview(Settings(), queue, "en", slots=2)  # two files at once
    assert [p["start_in_seconds"] for p in two["pending"]] == [0.0, 10.0, 12.0]


def test_without_measurements_the_time_left_is_unknown(queue: TaskQueue) -> None:
    queue.enqueue(NewTask(source="a.wav", size=1, mtime_ns=1, model="tiny.en", audio_seconds=9))
    data = queueview.overview(Settings(), queue, "zh-CN", slots=1)
    assert data["waiting"] == 1 and data["left_seconds"] is None
    assert data["pending"][0]["start_in_seconds"] == 0.0  # next in line starts at once


def test_eta_is_smoothed_and_progress_moves_on_short_files(queue: TaskQueue, clock) -> None:
    finished(queue, "cal.wav", audio=600, work=300, load=0)  # factor 0.5
    t = queue.enqueue(NewTask(source="long.wav", size=1, mtime_ns=1, model="tiny.en",
                              audio_seconds=1200))  # forecast 600 s
    queue.claim(t.id, W, 3600, device="cpu")
    queue.start_processing(t.id, W, load_seconds=0)
    # progress in coarse, uneven steps (whisper reports per 30-s window); a slow start
    steps = [(60, 0.02), (120, 0.05), (180, 0.25), (240, 0.3), (300, 0.55), (360, 0.6)]
    etas, done = [], 0
    for at, progress in steps:
        clock.advance(at - done)
        done = at
        queue.set_progress(t.id, W, progress)
        etas.append(queueview.overview(Settings(), queue, "en", 1)["running"][0]["eta_seconds"])
    raw = [at / p - at for at, p in steps]  # elapsed/progress − elapsed alone
    jumps = [abs(a - b) for a, b in zip(etas, etas[1:], strict=False)]
    raw_jumps = [abs(a - b) for a, b in zip(raw, raw[1:], strict=False)]
    assert max(raw_jumps) > 1500  # 38 min → 9 min: what the page showed before
    assert max(jumps) < 200 and all(e > 0 for e in etas)
    assert etas == sorted(etas, reverse=True)  # only ever goes down here

    short = queue.enqueue(NewTask(source="short.wav", size=1, mtime_ns=1, model="tiny.en",
                                  audio_seconds=20))  # forecast 10 s, reports 0 until the end
    queue.claim(short.id, W, 3600, device="cpu")
    queue.start_processing(short.id, W, load_seconds=0)
    seen = []
    for _ in range(3):
        clock.advance(3)
        row = [r for r in queueview.overview(Settings(), queue, "en", 1)["running"]
               if r["id"] == short.id][0]
        seen.append(row["progress"])
    assert seen == [0.3, 0.6, 0.9]


def test_history_search_states_paging_and_reasons(queue: TaskQueue, clock) -> None:
    for i in range(queueview.PAGE_SIZE + 5):
        finished(queue, f"team/meeting {i:02d}.wav", audio=10, work=1, load=0)
        clock.advance(1)
    bad = queue.enqueue(NewTask(source="100%_real.mp3", size=1, mtime_ns=1, model="tiny.en"),
                        failed=("not_audio", "The file is not audio: 100%_real.mp3"))
    odd = queue.enqueue(NewTask(source="odd.mp3", size=1, mtime_ns=1, model="tiny.en"),
                        failed=("some_new_kind", "Something new"))
    first = queueview.history(queue, "en", state=None, search="", page=1)
    assert first["total"] == queueview.PAGE_SIZE + 7 and first["pages"] == 2
    assert len(first["items"]) == queueview.PAGE_SIZE
    second = queueview.history(queue, "en", state="completed", search="", page=2)
    assert [i["source"] for i in second["items"]] == [f"team/meeting {i:02d}.wav"
                                                      for i in (4, 3, 2, 1, 0)]
    assert second["items"][0]["formats"] == ["srt", "txt"]
    found = queueview.history(queue, "zh-CN", state=None, search="%_", page=1)
    assert [i["id"] for i in found["items"]] == [bad.id]  # % and _ are literal characters
    assert found["items"][0]["reason"] == "不是可解码的音频或视频文件。"
    assert found["items"][0]["error"] == "The file is not audio: 100%_real.mp3"
    other = queueview.history(queue, "zh-CN", state="failed", search="odd", page=1)
    assert other["items"][0]["reason"] == "意外错误。" and other["items"][0]["id"] == odd.id
    assert queueview.history(queue, "en", state=None, search="meeting 1", page=1)["total"] == 10
    assert queueview.history(queue, "en", state=None, search="", page=99)["items"] == []


def test_backoff_waits_go_after_ready_files(queue: TaskQueue, clock) -> None:
    finished(queue, "cal.wav", audio=10, work=1, load=0)
    later = queue.enqueue(NewTask(source="retry.wav", size=1, mtime_ns=1, model="tiny.en",
                                  audio_seconds=5, priority=9))
    queue.update_fields(later.id, next_attempt_at=clock.now() + timedelta(seconds=120))
    ready = queue.enqueue(NewTask(source="ready.wav", size=1, mtime_ns=1, model="tiny.en",
                                  audio_seconds=5))
    data = queueview.overview(Settings(), queue, "en", 1)
    assert [p["id"] for p in data["pending"]] == [ready.id, later.id]
    assert data["pending"][1]["start_in_seconds"] == 120.0
