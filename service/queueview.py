"""What the web page shows of the queue: waiting files in start order with an expected start,
running ones with a smoothed ETA, and a searchable, paged history.

Estimates come from the calibrated real-time factors (`model_stats`: transcription seconds per
audio second and model load time, per model and device), the same figures /metrics reports.
A running task's ETA blends that forecast with the progress-based one, weighting the progress
more as it grows, so a coarse progress step does not make the ETA jump (22 min → 7 min).
Times are UTC ISO strings with a 'Z': the browser shows them in its own time zone.
"""

from __future__ import annotations

import heapq
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from . import i18n
from .config import Settings
from .tables import ACTIVE_STATES, CANCELLED, COMPLETED, FAILED, PENDING, Task
from .tasks import TaskQueue

PAGE_SIZE = 20
HISTORY_STATES = (COMPLETED, FAILED, CANCELLED)


def iso(dt: datetime | None) -> str | None:
    """A stored (naive UTC) time as '2026-12-01T09:30:00Z'."""
    return dt.isoformat(timespec="seconds") + "Z" if dt else None


class Rates:
    """Real-time factor and load time per model (per device when known) from model_stats."""

    def __init__(self, rows: list[tuple]) -> None:
        self._by: dict[tuple[str, str | None], tuple[float | None, float | None]] = {}
        sums: dict[str, list[float]] = {}
        for model, device, rtf, load in rows:
            self._by[(model, device)] = (rtf, load)
            if rtf is not None:
                s = sums.setdefault(model, [0.0, 0.0, 0])
                s[0] += rtf
                s[1] += load or 0.0
                s[2] += 1
        for model, (rtf, load, n) in sums.items():
            self._by[(model, None)] = (rtf / n, load / n)

    def seconds(self, model: str, audio_seconds: float | None, device: str | None = None,
                *, loaded: bool = False) -> float | None:
        """Expected wall time of a file (model load unless `loaded`, plus transcription), or
        None before any file of this model was measured."""
        rtf, load = self._by.get((model, device)) or self._by.get((model, None)) or (None, None)
        if rtf is None or not audio_seconds:
            return None
        return (0.0 if loaded else load or 0.0) + rtf * audio_seconds


def read_rates(session: Session) -> Rates:
    rows = session.execute(text(
        "SELECT model, device, avg_real_time_factor, avg_load_seconds FROM model_stats")).all()
    return Rates([tuple(r) for r in rows])


def smoothed_eta(elapsed: float, progress: float, forecast: float | None) -> float | None:
    """Seconds left: forecast − elapsed blended with elapsed/progress − elapsed by progress."""
    by_forecast = max(0.0, forecast - elapsed) if forecast is not None else None
    if progress <= 0 or progress >= 1:
        return by_forecast if progress < 1 else 0.0
    by_progress = elapsed / progress - elapsed
    if by_forecast is None:
        return by_progress
    return (1 - progress) * by_forecast + progress * by_progress


def reason(task: Task, lang: str) -> str | None:
    """The failure in the page's language: a plain summary by error kind (details follow)."""
    if not task.error_kind:
        return None
    key = f"reason.{task.error_kind}"
    return i18n.t(key if key in i18n.MESSAGES["en"] else "reason.error", lang)


def task_row(task: Task, lang: str) -> dict[str, Any]:
    return {
        "id": task.id, "source": task.source, "status": task.status, "model": task.model,
        "language": task.detected_language or task.language, "priority": task.priority,
        "audio_seconds": task.audio_seconds, "device": task.device,
        "created": iso(task.created_at), "finished": iso(task.finished_at),
        "attempts": task.attempts, "error_kind": task.error_kind,
        "reason": reason(task, lang), "error": task.error_message,
        "formats": sorted({p.rsplit(".", 1)[-1] for p in (task.outputs or [])}),
        "audio": task.source_state == "archived",
    }


def overview(settings: Settings, queue: TaskQueue, lang: str, slots: int) -> dict[str, Any]:
    """Counts, running tasks (progress, smoothed ETA), waiting ones in start order with an
    expected start, and "N waiting, about T left" for the whole queue."""
    now = queue.clock.now()
    with Session(queue.engine) as s:
        rates = read_rates(s)
        active = list(s.scalars(select(Task).where(Task.status.in_(ACTIVE_STATES))
                                .order_by(Task.id)))
        pending = list(s.scalars(select(Task).where(Task.status == PENDING).order_by(
            Task.priority.desc(), Task.created_at, Task.id)))
        s.expunge_all()
    running, free_at = [], []
    for task in active:
        started = task.processing_at or task.claimed_at or now
        elapsed = max(0.0, (now - started).total_seconds())
        forecast = rates.seconds(task.model, task.audio_seconds, task.device,
                                 loaded=task.processing_at is not None)
        progress = float(task.progress or 0.0)
        eta = smoothed_eta(elapsed, progress, forecast) if task.processing_at else (
            forecast if forecast is not None else None)
        if eta is not None and forecast and progress < 1:  # moves during short files too
            progress = max(progress, min(0.99, elapsed / max(forecast, 0.1)))
        running.append({**task_row(task, lang), "progress": round(progress, 3),
                        "since": iso(task.claimed_at),
                        "eta_seconds": None if eta is None else round(eta, 1)})
        free_at.append(eta or 0.0)
    # ready ones first (the dispatcher's order), then those waiting for a retry backoff
    def backoff_until(t: Task) -> datetime:
        return t.next_attempt_at if t.next_attempt_at and t.next_attempt_at > now else now

    pending.sort(key=backoff_until)  # stable: the ready ones keep the dispatcher's order
    slots = max(1, slots)
    heap = sorted(free_at)[:slots] + [0.0] * max(0, slots - len(free_at))
    heapq.heapify(heap)
    known = all(r["eta_seconds"] is not None for r in running)  # start times can be told
    waiting, total = [], 0.0
    for task in pending:
        start = heapq.heappop(heap)
        if task.next_attempt_at and task.next_attempt_at > now:
            start = max(start, (task.next_attempt_at - now).total_seconds())
        need = rates.seconds(task.model, task.audio_seconds)
        waiting.append({**task_row(task, lang), "expected_seconds": need,
                        "start_in_seconds": round(start, 1) if known else None})
        known = known and need is not None
        heapq.heappush(heap, start + (need or 0.0))
        total = max(total, start + (need or 0.0))
    left = max([total, *free_at]) if (pending or running) else 0.0
    return {
        "now": iso(now), "counts": queue.counts(), "running": running, "pending": waiting,
        "waiting": len(pending), "left_seconds": round(left) if known else None,
    }


def history(queue: TaskQueue, lang: str, *, state: str | None, search: str, page: int
            ) -> dict[str, Any]:
    """Finished tasks, newest first, PAGE_SIZE per page; `search` matches the file name."""
    states = (state,) if state in HISTORY_STATES else HISTORY_STATES
    stmt = select(Task).where(Task.status.in_(states))
    if search:
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(Task.source.like(f"%{escaped}%", escape="\\"))
    page = max(1, page)
    with Session(queue.engine) as s:
        total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
        rows = list(s.scalars(stmt.order_by(Task.finished_at.desc().nulls_last(),
                                            Task.id.desc())
                              .offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)))
        s.expunge_all()
    return {"page": page, "pages": max(1, -(-total // PAGE_SIZE)), "total": total,
            "items": [task_row(t, lang) for t in rows]}
