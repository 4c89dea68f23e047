"""The VRAM pool: may this model start on some GPU now, and on which?

Per card: budget = total × max_utilization − reserved_mb. A task is admitted on a card only if
  1. our reservations + its estimate ≤ budget, and
  2. live used memory (NVML: other programs included) + our reservations that have not shown up
     in "used" yet + its estimate ≤ total × max_utilization,
  3. and fewer than max_tasks_per_gpu of ours run there.
Among the cards where it fits, the least loaded wins. Reservations are released when the worker
process exits (that is when the driver really frees the memory).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass

from . import catalog
from .config import GpuSettings
from .gpu import GpuBackend, GpuInfo, SimulatedBackend


@dataclass
class Reservation:
    task_id: int
    gpu: int
    mb: int
    materialised: bool = False  # the worker has loaded: its memory is inside NVML's "used"


def default_estimate(model: str, confidence_factor: float, precision: str = "fp16",
                     engine: str = catalog.OPENAI) -> int:
    return int(catalog.default_vram_mb(model, engine, precision) * confidence_factor)


class VramPool:
    def __init__(
        self,
        backend: GpuBackend,
        settings: GpuSettings,
        estimate: Callable[..., int] | None = None,
    ) -> None:
        self.backend = backend
        self.settings = settings
        # (gpu name, model, precision=…, engine=…) → MiB; Calibration.estimate_mb has this shape
        self._estimate = estimate or (
            lambda gpu_name, model, **kind: default_estimate(
                model, settings.confidence_factor, **kind)
        )
        self._lock = threading.Lock()
        self._res: dict[int, Reservation] = {}

    def budget_mb(self, gpu: GpuInfo) -> int:
        return int(gpu.total_mb * self.settings.max_utilization) - self.settings.reserved_mb

    def estimate_mb(self, gpu: GpuInfo, model: str, **kind: str) -> int:
        """`kind`: precision and engine (engines.kind), when not openai-whisper fp16."""
        return self._estimate(gpu.name, model, **kind)

    def place(self, model: str, exclude: Collection[int] = (),
              **kind: str) -> tuple[int, int] | None:
        """(gpu index, estimate MiB) of the least-loaded card where `model` fits now, or None."""
        best: tuple[float, int, int] | None = None
        with self._lock:
            for gpu in self.backend.devices():
                if gpu.index in exclude:
                    continue
                est = self.estimate_mb(gpu, model, **kind)
                mine = [r for r in self._res.values() if r.gpu == gpu.index]
                if len(mine) >= self.settings.max_tasks_per_gpu:
                    continue
                reserved = sum(r.mb for r in mine)
                if reserved + est > self.budget_mb(gpu):
                    continue
                pending = sum(r.mb for r in mine if not r.materialised)
                cap = gpu.total_mb * self.settings.max_utilization
                if gpu.used_mb + pending + est > cap:
                    continue
                load = (gpu.used_mb + pending + est) / gpu.total_mb
                if best is None or load < best[0]:
                    best = (load, gpu.index, est)
        return None if best is None else (best[1], best[2])

    def reserve(self, task_id: int, gpu: int, mb: int) -> None:
        with self._lock:
            self._res[task_id] = Reservation(task_id, gpu, mb)

    def materialise(self, task_id: int) -> None:
        """The worker has loaded its model: from now on NVML's "used" includes it."""
        with self._lock:
            res = self._res.get(task_id)
            if res is not None:
                res.materialised = True
                if isinstance(self.backend, SimulatedBackend):  # a fake card "allocates" too
                    self.backend.hold(task_id, res.gpu, res.mb)

    def release(self, task_id: int) -> None:
        with self._lock:
            self._res.pop(task_id, None)
            if isinstance(self.backend, SimulatedBackend):
                self.backend.release(task_id)

    def reservations(self) -> list[Reservation]:
        with self._lock:
            return list(self._res.values())

    def snapshot(self) -> list[dict]:
        """Per card: total, budget, our reservations, live used — for `status`."""
        res = self.reservations()
        return [
            {
                "index": g.index,
                "name": g.name,
                "total_mb": g.total_mb,
                "budget_mb": self.budget_mb(g),
                "reserved_mb": sum(r.mb for r in res if r.gpu == g.index),
                "used_mb": g.used_mb,
                "tasks": sum(1 for r in res if r.gpu == g.index),
            }
            for g in self.backend.devices()
        ]
