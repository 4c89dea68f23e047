"""Which task starts next on the GPUs, and where: priority, age, fit — with EASY backfilling.

The head of the queue (highest priority, oldest) starts as soon as it fits. If it does not fit,
it gets a reserved start time (its "shadow"): the moment enough running tasks on some card are
expected to have finished. A later, smaller task may overtake it only if it fits now AND either
is expected to finish before the shadow time, runs on another card, or leaves enough memory
free at the shadow time for the head anyway. So small files keep the cards busy, and a big file
behind a stream of small ones still starts within a bounded time (no starvation).

Runtime estimate: audio seconds × calibrated real-time factor + load time; the factor is
`rtf(gpu name, model, engine=…, precision=…)`, learned per engine as the VRAM is.
Pure policy: no processes, no database writes; the simulator runs it under a simulated clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .clock import Clock
from .gpu import GpuInfo
from .tables import Task
from .vram import VramPool

LOAD_SECONDS = 5.0  # model load on a GPU, before calibration knows better
UNKNOWN_AUDIO_SECONDS = 600.0


@dataclass(frozen=True)
class Active:
    task_id: int
    gpu: int
    mb: int
    expected_end: datetime


@dataclass(frozen=True)
class Decision:
    task: Task
    gpu: int
    estimate_mb: int


@dataclass(frozen=True)
class Shadow:
    at: datetime
    gpu: int
    spare_mb: int  # budget left on that card at `at` once the head has started
    spare_slots: int


class Planner:
    def __init__(
        self, pool: VramPool, clock: Clock, rtf: Callable[..., float],
        kind: Callable[[Task], dict[str, str]] | None = None,
    ) -> None:
        self.pool = pool
        self.clock = clock
        self._rtf = rtf
        # a task's engine and precision, which its VRAM estimate depends on (engines.kind)
        self._kind = kind or (lambda task: {})

    def runtime_s(self, task: Task, gpu_name: str) -> float:
        audio = task.audio_seconds or UNKNOWN_AUDIO_SECONDS
        return audio * self._rtf(gpu_name, task.model, **self._kind(task)) + LOAD_SECONDS

    def next(self, ready: Sequence[Task], active: Sequence[Active]) -> Decision | None:
        """The next task to start now (the caller claims it and reserves), or None."""
        if not ready:
            return None
        head = ready[0]
        placed = self.pool.place(head.model, **self._kind(head))
        if placed is not None:
            return Decision(head, *placed)
        now = self.clock.now()
        devices = {g.index: g for g in self.pool.backend.devices()}
        shadow = self.shadow(head, active, devices)
        for task in ready[1:]:
            placed = self.pool.place(task.model, **self._kind(task))
            if placed is None:
                continue
            gpu, est = placed
            if shadow is None or gpu != shadow.gpu:
                return Decision(task, gpu, est)
            end = now + timedelta(seconds=self.runtime_s(task, devices[gpu].name))
            if end <= shadow.at or (est <= shadow.spare_mb and shadow.spare_slots > 0):
                return Decision(task, gpu, est)
            other = self.pool.place(task.model, exclude={shadow.gpu}, **self._kind(task))
            if other is not None:
                return Decision(task, *other)
        return None

    def shadow(
        self, head: Task, active: Sequence[Active], devices: dict[int, GpuInfo]
    ) -> Shadow | None:
        """When and where the head could start as running tasks end; None if on no card ever
        (then it must not hold others back: e.g. another program fills the card)."""
        cfg = self.pool.settings
        best: Shadow | None = None
        for gpu in devices.values():
            est = self.pool.estimate_mb(gpu, head.model, **self._kind(head))
            budget = self.pool.budget_mb(gpu)
            cap = gpu.total_mb * cfg.max_utilization
            mine = sorted((a for a in active if a.gpu == gpu.index), key=lambda a: a.expected_end)
            reserved = sum(a.mb for a in mine)
            external = max(0, gpu.used_mb - reserved)
            count = len(mine)
            for a in mine:
                reserved -= a.mb
                count -= 1
                fits = reserved + est <= budget and external + reserved + est <= cap
                if fits and count < cfg.max_tasks_per_gpu:
                    cand = Shadow(a.expected_end, gpu.index, int(budget - reserved - est),
                                  cfg.max_tasks_per_gpu - count - 1)
                    if best is None or cand.at < best.at:
                        best = cand
                    break
        return best
