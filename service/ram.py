"""Host memory admission: a task starts only when its worker's expected peak fits in free RAM.

Why: every worker holds a model and a piece of audio (see `pieces`); several at once on a
workstation that also runs an LLM server can push it into swap or the OOM killer. Like the
VRAM pool, the estimate starts from a table and then learns from measured peaks (each worker
reports its peak RSS), and memory that running workers have not taken yet still counts as
taken. The probes of free memory and of a worker's RSS are injected (tests, other systems).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from . import catalog
from .catalog import OPENAI

log = logging.getLogger(__name__)

MB = 1024 * 1024
# A worker with torch, whisper, silero-vad and OpenCC imported, before any model: about
# 380 MiB (bench/memory.py measured 533 MiB with tiny.en loaded); with room for Windows' spawn.
BASE_MB = 600
BYTES_PER_PARAMETER = 4  # checkpoints load as fp32 on the host (a GPU model is cast after)
PIECE_MB_PER_MINUTE = 36  # samples + spectrogram of one piece (≈ 2.1 GB per audio hour)

__all__ = ["RamBudget", "default_estimate_mb"]


def default_estimate_mb(model: str, piece_minutes: float) -> int:
    """Expected peak of one worker before any measurement: interpreter + weights + 2 pieces
    (a piece can reach twice its size when speech runs on without a pause)."""
    params = catalog.parameters_millions(model)
    pieces = 2 * (piece_minutes or 60) * PIECE_MB_PER_MINUTE
    return int(BASE_MB + params * BYTES_PER_PARAMETER + pieces)


def _available_mb() -> int:
    import psutil

    return int(psutil.virtual_memory().available / MB)


def _rss_mb(pid: int) -> int | None:
    import psutil

    try:
        return int(psutil.Process(pid).memory_info().rss / MB)
    except (psutil.Error, OSError):
        return None


@dataclass
class RamBudget:
    """Admits tasks against the memory that is free now, less `reserve_mb` for everything
    else on the machine, less what running workers are still expected to take."""

    reserve_mb: int
    piece_minutes: float
    available_mb: Callable[[], int] = _available_mb
    rss_mb: Callable[[int], int | None] = _rss_mb
    # (engine, model) → largest measured peak
    learned: dict[tuple[str, str], int] = field(default_factory=dict)
    _waiting: set[int] = field(default_factory=set)

    def estimate_mb(self, model: str, engine: str = OPENAI) -> int:
        return (self.learned.get((engine, model))
                or default_estimate_mb(model, self.piece_minutes))

    def learn(self, model: str, peak_mb: int | None, engine: str = OPENAI) -> None:
        """A worker's measured peak RSS; the estimate follows the largest seen (a peak is a
        property of the engine, the model and the piece size, not of the file's length)."""
        if peak_mb:
            key = (engine, model)
            self.learned[key] = max(int(peak_mb), self.learned.get(key, 0))

    def fits(self, task_id: int, model: str, running: Iterable[tuple[int | None, str, str]],
             engine: str = OPENAI) -> bool:
        """May task `task_id` (`model` on `engine`) start beside the `running` workers
        (pid, model, engine)?

        With nothing running it always may: it would otherwise wait forever (a model larger
        than the machine's memory fails in its worker with a plain out-of-memory reason).
        """
        running = list(running)
        need = self.estimate_mb(model, engine)
        free = self.available_mb() - self.reserve_mb
        for pid, other, other_engine in running:
            current = self.rss_mb(pid) if pid else None
            free -= max(0, self.estimate_mb(other, other_engine) - (current or 0))
        ok = not running or free >= need
        if ok:
            self._waiting.discard(task_id)
        elif task_id not in self._waiting:  # said once per task, not every tick
            self._waiting.add(task_id)
            log.info("task %s waits for memory: its worker needs about %d MiB, %d MiB are free "
                     "beyond memory.reserve_mb and the running tasks", task_id, need, max(0, free))
        return ok
