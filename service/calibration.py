"""Estimates that learn: VRAM and speed per (GPU name, model, precision, engine).

Start from openai-whisper's table (faster-whisper: × its published ratio for the compute type,
catalog.default_vram_mb) × confidence_factor; each engine learns apart. After each task the
worker's measured peak joins the last N samples, and the estimate becomes mean + k·stddev. A
CUDA out-of-memory raises a floor under the estimate. Everything lives in `model_memory`, so it
survives restarts. The parent is the only writer on its node; the cache here is just a copy of
that table.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from . import catalog
from .catalog import OPENAI
from .clock import Clock
from .db import session_factory
from .tables import ModelMemory

# Seconds of work per second of audio when nothing is measured yet (GPU, fp16, openai-whisper).
DEFAULT_RTF = {"tiny": 0.03, "base": 0.04, "small": 0.07, "medium": 0.12, "large": 0.2,
               "turbo": 0.08}
# faster-whisper until measured: its README's 13-min file on one GPU (large-v2, fp16), 1m03s
# against openai-whisper's 2m23s. Batched it is faster still (17 s); the window-by-window figure
# keeps the first estimate on the safe (longer) side.
FASTER_RTF_RATIO = 63 / 143
OOM_GROWTH = 1.25
Key = tuple[str, str, str, str]  # (gpu name, model, precision, engine)


def default_rtf(model: str, engine: str = OPENAI) -> float:
    table = next((DEFAULT_RTF[key] for key in sorted(DEFAULT_RTF, key=len, reverse=True)
                  if key in model), DEFAULT_RTF["large"])
    return table if engine == OPENAI else table * FASTER_RTF_RATIO


@dataclass
class _Entry:
    samples: list[float] = field(default_factory=list)
    floor_mb: float = 0.0
    rtf: float | None = None
    last_peak: float | None = None


class Calibration:
    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        *,
        confidence_factor: float = 1.2,
        k: float = 3.0,
        window: int = 20,
    ) -> None:
        self._sessions = session_factory(engine)
        self.clock = clock
        self.confidence_factor = confidence_factor
        self.k = k
        self.window = window
        self._lock = threading.Lock()
        self._cache: dict[Key, _Entry] = {}
        self.reload()

    def reload(self) -> None:
        with self._sessions() as s, self._lock:
            self._cache = {
                (r.gpu_name, r.model, r.precision, r.engine): _Entry(
                    list(r.samples or []), r.floor_mb or 0.0, r.rtf_mean, r.last_peak_mb
                )
                for r in s.scalars(select(ModelMemory))
            }

    # ---- reading -------------------------------------------------------------------------
    def estimate_mb(self, gpu_name: str, model: str, precision: str = "fp16",
                    engine: str = OPENAI) -> int:
        with self._lock:
            e = self._cache.get((gpu_name, model, precision, engine))
        base = catalog.default_vram_mb(model, engine, precision) * self.confidence_factor
        if e is None:
            return int(base)
        if e.samples:
            n = len(e.samples)
            mean = sum(e.samples) / n
            std = math.sqrt(sum((x - mean) ** 2 for x in e.samples) / n)
            base = mean + self.k * std
        return int(math.ceil(max(base, e.floor_mb)))

    def rtf(self, gpu_name: str, model: str, precision: str = "fp16",
            engine: str = OPENAI) -> float:
        with self._lock:
            e = self._cache.get((gpu_name, model, precision, engine))
        return e.rtf if e is not None and e.rtf else default_rtf(model, engine)

    def table(self) -> list[dict]:
        """Estimate vs measured per model, for `status`."""
        with self._lock:
            keys = list(self._cache)
        out = []
        for gpu_name, model, precision, engine in sorted(keys):
            e = self._cache[(gpu_name, model, precision, engine)]
            out.append({
                "gpu": gpu_name, "model": model, "precision": precision, "engine": engine,
                "default_mb": int(catalog.default_vram_mb(model, engine, precision)
                                  * self.confidence_factor),
                "estimate_mb": self.estimate_mb(gpu_name, model, precision, engine),
                "measured_mean_mb": round(sum(e.samples) / len(e.samples)) if e.samples else None,
                "last_peak_mb": e.last_peak, "samples": len(e.samples),
                "real_time_factor": e.rtf,
            })
        return out

    # ---- learning ------------------------------------------------------------------------
    def record(
        self,
        gpu_name: str,
        model: str,
        precision: str,
        *,
        peak_mb: float | None,
        rtf: float | None = None,
        engine: str = OPENAI,
    ) -> None:
        """A finished task's measured peak (and speed) joins the window."""
        def change(e: _Entry) -> None:
            if peak_mb is not None and peak_mb > 0:
                e.samples = (e.samples + [float(peak_mb)])[-self.window:]
                e.last_peak = float(peak_mb)
            if rtf is not None and rtf > 0:
                e.rtf = rtf if e.rtf is None else 0.8 * e.rtf + 0.2 * rtf

        self._update((gpu_name, model, precision, engine), change)

    def out_of_memory(self, gpu_name: str, model: str, precision: str = "fp16",
                      engine: str = OPENAI) -> int:
        """Raise the floor after a CUDA OOM; returns the new estimate."""
        current = self.estimate_mb(gpu_name, model, precision, engine)

        def change(e: _Entry) -> None:
            e.floor_mb = max(e.floor_mb, current * OOM_GROWTH)

        self._update((gpu_name, model, precision, engine), change)
        return self.estimate_mb(gpu_name, model, precision, engine)

    def _update(self, key: Key, change) -> None:  # noqa: ANN001
        """Read-modify-write of one row, safe against other nodes sharing the database.

        The row is locked (SELECT … FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already
        serialises writers), so two nodes recording at once both keep their sample. When both
        insert the first row, the loser retries and then finds the winner's row to update.
        """
        for attempt in (1, 2):
            try:
                self._update_once(key, change)
                return
            except IntegrityError:
                if attempt == 2:
                    raise

    def _update_once(self, key: Key, change) -> None:  # noqa: ANN001
        gpu_name, model, precision, engine = key
        with self._sessions.begin() as s, self._lock:
            row = s.get(ModelMemory, key, with_for_update=True)
            e = _Entry()
            if row is not None:  # the database, not our cache: other nodes write here too
                e = _Entry(list(row.samples or []), row.floor_mb or 0.0, row.rtf_mean,
                           row.last_peak_mb)
            change(e)
            n = len(e.samples)
            mean = sum(e.samples) / n if n else 0.0
            var = sum((x - mean) ** 2 for x in e.samples) / n if n else 0.0
            values = dict(samples=e.samples, mean_mb=mean, variance=var, last_peak_mb=e.last_peak,
                          rtf_mean=e.rtf, floor_mb=e.floor_mb, updated_at=self.clock.now())
            if row is None:
                s.add(ModelMemory(gpu_name=gpu_name, model=model, precision=precision,
                                  engine=engine, **values))
                s.flush()  # a concurrent first insert fails here, inside the retry
            else:
                for k, v in values.items():
                    setattr(row, k, v)
            self._cache[key] = e
