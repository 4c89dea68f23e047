"""The GPU planner: priority, fit, EASY backfilling, no starvation (simulated GPUs and time)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from service.clock import ManualClock
from service.config import GpuSettings
from service.gpu import SimulatedBackend
from service.planner import Active, Planner
from service.tables import Task
from service.vram import VramPool


def task(tid: int, model: str, audio: float, priority: int = 0) -> Task:
    return Task(id=tid, source=f"{tid}.mp3", model=model, audio_seconds=audio,
                priority=priority, size=1, mtime_ns=1, options={})


class Sim:
    """Runs the planner over a task list with a manual clock; tasks run audio × rtf seconds."""

    def __init__(self, sizes: list[int], rtf: float = 0.1, **gpu) -> None:
        self.clock = ManualClock()
        self.backend = SimulatedBackend(sizes)
        self.pool = VramPool(self.backend, GpuSettings(reserved_mb=0, **gpu))
        self.planner = Planner(self.pool, self.clock, lambda g, m: rtf)
        self.rtf = rtf
        self.running: dict[int, tuple[Active, Task]] = {}
        self.started: dict[int, float] = {}
        self.t0 = self.clock.now()

    def step(self, ready: list[Task]) -> None:
        while True:
            d = self.planner.next(ready, [a for a, _ in self.running.values()])
            if d is None:
                break
            ready.remove(d.task)
            self.pool.reserve(d.task.id, d.gpu, d.estimate_mb)
            self.pool.materialise(d.task.id)
            end = self.clock.now() + timedelta(seconds=self.planner.runtime_s(d.task, ""))
            self.running[d.task.id] = (Active(d.task.id, d.gpu, d.estimate_mb, end), d.task)
            self.started[d.task.id] = (self.clock.now() - self.t0).total_seconds()
        self.clock.advance(1)
        for tid, (a, _) in list(self.running.items()):
            if a.expected_end <= self.clock.now():
                del self.running[tid]
                self.pool.release(tid)


def test_head_that_fits_starts_first() -> None:
    s = Sim([24576])
    ready = [task(1, "large-v3", 60, priority=5), task(2, "tiny", 60)]
    d = s.planner.next(ready, [])
    assert d.task.id == 1


def test_big_task_behind_a_stream_of_small_ones_is_not_starved() -> None:
    s = Sim([24576], max_tasks_per_gpu=10)
    # large-v3 needs 12288; the card's budget is 22118. Small tasks keep arriving forever.
    ready = [task(i, "small", 300) for i in range(1, 8)]  # 7 × 2457 = 17199 in use
    s.step(ready)
    assert len(s.running) == 7
    ready.insert(0, task(100, "large-v3", 60, priority=1))  # highest priority, does not fit
    next_id = 1000
    for _ in range(2000):
        ready.append(task(next_id, "small", 300))  # a new small file every second
        next_id += 1
        s.step(ready)
        if 100 in s.started:
            break
    assert 100 in s.started, "the big task never started"
    # It starts when the first running small tasks end (300 s × 0.1 + 5 s load = 35 s).
    assert s.started[100] <= 36 + 1


def test_backfill_only_when_it_cannot_delay_the_head() -> None:
    s = Sim([24576], max_tasks_per_gpu=10)
    long_small = task(1, "small", 3000)  # runs 305 s
    s.step([long_small, task(2, "medium", 60), task(3, "medium", 60)])
    # budget 22118: small 2457 + 2 × medium 6144 = 14745 in use; head large-v3 needs 12288.
    head = task(10, "large-v3", 60)
    quick = task(11, "tiny", 10)  # 6 s: finishes before the mediums (11 s)
    slow = task(12, "small", 5000)  # 505 s: would still hold 2457 MiB at the head's start
    actives = [a for a, _ in s.running.values()]
    shadow = s.planner.shadow(head, actives, {g.index: g for g in s.backend.devices()})
    # the head can start when the first medium ends; then 22118 − 8601 − 12288 = 1229 MiB spare
    assert shadow is not None and shadow.gpu == 0 and shadow.spare_mb == 1229
    d = s.planner.next([head, slow, quick], actives)
    assert d is not None and d.task.id == 11  # the quick one backfills; the slow one must wait
    assert s.planner.next([head, slow], actives) is None


def test_a_task_that_fits_nowhere_does_not_block_others() -> None:
    s = Sim([8192])
    s.backend.set_external(0, 7000)  # another program holds the card
    ready = [task(1, "large-v3", 60), task(2, "tiny", 60)]
    assert s.planner.next(ready, []) is None  # nothing fits now at all
    s.backend.set_external(0, 1000)
    d = s.planner.next(ready, [])
    assert d.task.id == 2  # large-v3 can never fit an 8 GB card: tiny goes ahead


def test_runtime_estimate_uses_the_tasks_own_engine() -> None:
    """Shadow times come from the task's engine and precision (engines.kind): a faster-whisper
    file is expected to end when faster-whisper would finish it."""
    clock = ManualClock()
    pool = VramPool(SimulatedBackend([24576]), GpuSettings(reserved_mb=0))
    speed = {"openai-whisper": 0.2, "faster-whisper": 0.05}
    seen: list[dict] = []

    def rtf(gpu: str, model: str, **kind: str) -> float:
        seen.append(kind)
        return speed[kind["engine"]]

    def kind(t: Task) -> dict[str, str]:
        return {"engine": t.options.get("engine", "openai-whisper"), "precision": "fp16"}

    planner = Planner(pool, clock, rtf, kind)
    openai, faster = task(1, "small", 600), task(2, "small", 600)
    faster.options = {"engine": "faster-whisper"}
    assert planner.runtime_s(openai, "H100") - planner.runtime_s(faster, "H100") == \
        pytest.approx(600 * (0.2 - 0.05))
    assert seen[-1] == {"engine": "faster-whisper", "precision": "fp16"}
