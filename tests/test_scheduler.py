"""The dispatcher with a real queue, real worker processes and real tiny.en; GPUs simulated."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from service import db, outcome, outputs, ram
from service.clock import SystemClock
from service.config import load_settings
from service.gpu import SimulatedBackend
from service.ram import RamBudget
from service.scheduler import Dispatcher
from service.tasks import NewTask, TaskQueue
from service.vram import VramPool
from tests.conftest import write_settings
from tests.speech import read_wav, silence_wav, speak_wav, talk_wav, write_wav
from tests.svc import START_METHOD

pytestmark = pytest.mark.slow


class Harness:
    def __init__(
        self, tmp_path: Path, checkpoint: Path, sizes: list[int] | None, keep_warm: float = 0,
        **sched,
    ) -> None:
        models = tmp_path / "models"
        models.mkdir(parents=True)
        shutil.copy(checkpoint, models / "tiny.en.pt")
        data = {
            "models": {"dir": str(models), "default": "tiny.en", "allow_download": False,
                       "keep_warm_seconds": keep_warm},
            "scheduler": {"backoff_seconds": 0, "progress_seconds": 0.2,
                          "start_method": START_METHOD, **sched},
            "gpu": {"reserved_mb": 0, "max_tasks_per_gpu": 1},
        }
        self.settings = load_settings(write_settings(tmp_path, data))
        for folder in (self.settings.inbox, self.settings.outbox):
            folder.mkdir(parents=True, exist_ok=True)
        db.migrate(self.settings.database_url)
        self.queue = TaskQueue(db.make_engine(self.settings.database_url), SystemClock())
        self.backend = SimulatedBackend(sizes) if sizes else None
        self.pool = VramPool(self.backend, self.settings.gpu) if self.backend else None
        self.dispatcher = Dispatcher(
            self.settings, self.queue, SystemClock(), self.pool,
            lambda t: outcome.settle(self.settings, self.queue, t), "test-host:1",
        )

    def add(self, name: str, seconds: float) -> None:
        path = silence_wav(self.settings.inbox / name, seconds)
        st = path.stat()
        self.queue.enqueue(NewTask(source=name, size=st.st_size, mtime_ns=st.st_mtime_ns,
                                   model="tiny.en", audio_seconds=seconds))

    def run_until_idle(self, timeout: float, on_tick=None) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.dispatcher.tick()
            if on_tick:
                on_tick()
            counts = self.queue.counts()
            if self.dispatcher.idle() and counts["pending"] == 0:
                return
            time.sleep(0.1)
        raise AssertionError(f"not idle after {timeout} s: {self.queue.counts()}")

    def close(self) -> None:
        self.dispatcher.shutdown()
        self.queue.engine.dispose()


@pytest.fixture
def harness_factory(tmp_path: Path, tiny_en_checkpoint: Path):
    made = []

    def make(sizes: list[int] | None = None, **kw) -> Harness:
        h = Harness(tmp_path / f"h{len(made)}", tiny_en_checkpoint, sizes, **kw)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def test_tasks_spread_over_simulated_gpus_within_their_budget(harness_factory) -> None:
    h = harness_factory([2048, 2048])  # tiny.en estimate 1228 MiB: one task per card
    for i in range(4):
        h.add(f"clip{i}.wav", 2.0)
    peak = []

    def watch() -> None:
        peak.append(len(h.dispatcher.running))
        for gpu in h.pool.snapshot():
            assert gpu["reserved_mb"] <= gpu["budget_mb"]

    h.run_until_idle(240, watch)
    rows = h.queue.list()
    assert [r.status for r in rows] == ["completed"] * 4
    assert {r.device for r in rows} == {"cuda:0", "cuda:1"}
    assert max(peak) == 2
    assert all(r.vram_estimate_mb == 1228 for r in rows)
    assert h.pool.reservations() == [] and all(g.used_mb == 0 for g in h.backend.devices())
    assert all((h.settings.archive / f"clip{i}.wav").is_file() for i in range(4))


def test_external_load_holds_tasks_back_until_memory_frees(harness_factory) -> None:
    h = harness_factory([4096])
    h.backend.set_external(0, 3000)  # another program holds most of the card
    h.add("wait.wav", 1.0)
    for _ in range(10):
        h.dispatcher.tick()
        time.sleep(0.05)
    assert h.queue.counts()["pending"] == 1 and not h.dispatcher.running
    h.backend.set_external(0, 0)
    h.run_until_idle(120)
    assert h.queue.list()[0].status == "completed"


def test_a_killed_worker_is_noticed_and_the_task_retried(harness_factory) -> None:
    h = harness_factory(None, max_attempts=3)
    h.add("victim.wav", 30.0)
    deadline = time.monotonic() + 120
    killed_at = None
    while time.monotonic() < deadline and killed_at is None:
        h.dispatcher.tick()
        for run in h.dispatcher.running.values():
            if h.queue.get(run.task.id).status == "processing":
                os.kill(run.proc.process.pid, signal.SIGKILL)
                killed_at = time.monotonic()
        time.sleep(0.1)
    assert killed_at is not None
    while h.queue.get(1).attempts == 0:
        h.dispatcher.tick()
        time.sleep(0.05)
    detect_s = time.monotonic() - killed_at
    assert detect_s < 5
    print(f"dead worker noticed after {detect_s:.2f} s")
    row = h.queue.get(1)
    assert row.error_kind == "worker_crashed" and "exit code -9" in row.error_message
    h.run_until_idle(180)
    row = h.queue.get(1)
    assert row.status == "completed" and row.attempts == 1 and row.crash_retries == 0


def test_warm_worker_takes_the_next_file_of_its_model_then_leaves(harness_factory) -> None:
    h = harness_factory([4096], keep_warm=3.0)
    for i in range(3):
        h.add(f"w{i}.wav", 1.0)
    pids: dict[int, int] = {}

    def watch() -> None:
        for tid, run in h.dispatcher.running.items():
            pids[tid] = run.proc.process.pid

    h.run_until_idle(120, watch)
    rows = h.queue.list()
    assert [r.status for r in rows] == ["completed"] * 3
    assert len(set(pids.values())) == 1  # one process, one model load, three files
    loads = sorted(r.load_seconds for r in rows)
    assert loads[0] < 0.05 and loads[1] < 0.05 and loads[2] > 0.1
    # while warm, its VRAM stays reserved; after the idle time it exits and returns it
    assert h.pool.snapshot()[0]["reserved_mb"] == 1228
    worker = next(iter(pids.values()))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and h.pool.reservations():
        h.dispatcher.tick()
        time.sleep(0.2)
    assert h.pool.reservations() == [] and h.backend.devices()[0].used_mb == 0
    assert not psutil.pid_exists(worker)  # exited and reaped


def _until(h: Harness, predicate, timeout: float) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h.dispatcher.tick()
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout} s: {h.queue.counts()}")


def test_a_task_over_its_time_limit_is_stopped_with_a_reason(harness_factory) -> None:
    h = harness_factory(None, max_attempts=1, timeout_factor=0.001, timeout_min_seconds=1)
    path = talk_wav(h.settings.inbox.parent / "endless.wav", 60.0)  # seconds of CPU work
    path = path.rename(h.settings.inbox / "endless.wav")
    st = path.stat()
    h.queue.enqueue(NewTask(source="endless.wav", size=st.st_size, mtime_ns=st.st_mtime_ns,
                            model="tiny.en", audio_seconds=60.0))
    pids: list[int] = []

    def stopped() -> bool:
        pids.extend(r.proc.process.pid for r in h.dispatcher.running.values())
        return h.queue.get(1).status == "failed"

    _until(h, stopped, 60)
    row = h.queue.get(1)
    assert row.error_kind == "timeout" and "longer than 1 seconds" in row.error_message
    assert pids and not psutil.pid_exists(pids[0]) and not h.dispatcher.running


def test_cancel_stops_the_running_worker(harness_factory) -> None:
    h = harness_factory(None)
    speech, rate = read_wav(speak_wav("We are still talking about the budget.",
                                      h.settings.inbox.parent / "s.wav"))
    long = np.tile(speech, int(240 * rate / len(speech)) + 1)  # ~4 min of speech: ~15 s of work
    path = write_wav(h.settings.inbox / "long.wav", long, rate)
    st = path.stat()
    h.queue.enqueue(NewTask(source="long.wav", size=st.st_size, mtime_ns=st.st_mtime_ns,
                            model="tiny.en", audio_seconds=len(long) / rate))
    _until(h, lambda: h.queue.get(1).status == "processing", 60)
    pid = h.dispatcher.running[1].proc.process.pid
    # what a worker killed while writing leaves behind (its temp names are random)
    partial = outputs._temp_path(h.settings.outbox, "long.srt")
    partial.write_text("1\n00:00:00,000 --> ", encoding="utf-8")
    h.queue.cancel(1)  # what `python app.py cancel 1` does
    _until(h, lambda: not h.dispatcher.running, 15)
    assert not psutil.pid_exists(pid) and h.queue.get(1).status == "cancelled"
    assert (h.settings.inbox / "long.wav").is_file()
    assert not partial.exists()


def test_files_with_the_same_name_keep_their_own_transcripts(harness_factory) -> None:
    """talk.wav and talk.mp3 in one folder, then talk.wav again after it was archived."""
    h = harness_factory(None)
    h.add("team/talk.wav", 1.0)
    h.add("team/talk.mp3", 1.5)
    h.run_until_idle(120)
    assert (h.settings.archive / "team/talk.wav").is_file()
    h.add("team/talk.wav", 2.0)  # the same name again, other content
    h.run_until_idle(120)
    rows = h.queue.list()
    assert [r.status for r in rows] == ["completed"] * 3
    stems = {r.id: r.output_stem for r in rows}
    assert sorted(stems.values()) == ["talk", "talk (2)", "talk (3)"]
    for row in rows:
        meta = json.loads((h.settings.outbox / "team" / f"{row.output_stem}.json")
                          .read_text(encoding="utf-8"))
        assert meta["source"] == row.source
        assert abs(meta["audio_seconds"] - row.audio_seconds) < 0.01  # its own audio


def test_a_name_given_to_another_nodes_running_task_is_not_reused(harness_factory) -> None:
    """Another node (same database) runs team/talk.wav and has not written talk.txt yet."""
    h = harness_factory(None)
    h.add("team/talk.wav", 1.0)
    other = h.queue.claim(1, "other-host:7", 600)
    h.queue.update_fields(1, options={**other.options, "output_stem": "talk"})
    h.add("team/talk.mp3", 1.0)
    h.run_until_idle(120)
    mine = h.queue.get(2)
    assert mine.status == "completed" and mine.output_stem == "talk (2)"
    assert (h.settings.outbox / "team" / "talk (2).txt").is_file()
    assert not (h.settings.outbox / "team" / "talk.txt").exists()  # left to the other node


def test_a_task_waits_until_the_ram_it_needs_is_free(harness_factory) -> None:
    """Two CPU slots, RAM for one worker: the second file starts only after the first ends;
    the workers' measured peaks become the estimate."""
    h = harness_factory(None)
    h.settings.cpu.max_concurrent_tasks = 2
    need = ram.default_estimate_mb("tiny.en", h.settings.memory.piece_minutes)
    h.dispatcher.ram = RamBudget(1000, h.settings.memory.piece_minutes,
                                 available_mb=lambda: 1000 + need + 50)
    h.add("first.wav", 1.0)
    h.add("second.wav", 1.0)
    at_once = []
    h.run_until_idle(240, lambda: at_once.append(len(h.dispatcher.running)))
    assert [r.status for r in h.queue.list()] == ["completed", "completed"]
    assert max(at_once) == 1
    assert 100 < h.dispatcher.ram.learned[("openai-whisper", "tiny.en")] < need  # below the table


def test_with_ram_for_both_two_cpu_tasks_run_at_once(harness_factory) -> None:
    h = harness_factory(None)
    h.settings.cpu.max_concurrent_tasks = 2
    h.dispatcher.ram = RamBudget(1000, h.settings.memory.piece_minutes,
                                 available_mb=lambda: 100_000)
    h.add("first.wav", 20.0)
    h.add("second.wav", 20.0)
    at_once = []
    h.run_until_idle(240, lambda: at_once.append(len(h.dispatcher.running)))
    assert max(at_once) == 2


def test_the_start_method_setting_is_the_one_workers_use(harness_factory) -> None:
    h = harness_factory(None)
    assert h.dispatcher.workers.start_method == (
        "forkserver" if START_METHOD == "auto" else START_METHOD)
    h.add("one.wav", 1.0)
    h.run_until_idle(120)
    assert h.queue.list()[0].status == "completed"


def test_shutdown_requeues_every_running_task_at_once_and_stops_all_workers(
    harness_factory,
) -> None:
    """A stop (or a Windows shutdown, which allows seconds): every running task is pending
    again without an attempt spent, every worker is gone, and their deaths are no crashes."""
    h = harness_factory([4096, 4096])  # two simulated cards: two tasks at once
    for i in range(2):
        h.add(f"busy{i}.wav", 30.0)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(h.dispatcher.running) < 2:
        h.dispatcher.tick()
        time.sleep(0.1)
    assert len(h.dispatcher.running) == 2
    procs = [run.proc.process for run in h.dispatcher.running.values()]
    started = time.monotonic()
    h.dispatcher.shutdown()
    took = time.monotonic() - started
    print(f"shutdown with 2 running workers took {took:.2f} s")
    assert not any(p.is_alive() for p in procs)
    rows = h.queue.list()
    assert [(r.status, r.attempts) for r in rows] == [("pending", 0)] * 2
    for row in rows:
        details = [e.detail for e in h.queue.events(row.id)]
        assert details[-1] == "service stopped"
        assert not any(d and d.startswith("worker_crashed") for d in details)
    assert h.pool.reservations() == []
