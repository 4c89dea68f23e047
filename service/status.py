"""The status data, built in one place for `status`, `status --json`, the status page and /metrics.

`collect()` reads the database (counts, running tasks, failures, VRAM calibration) and takes the
service's own view (mode, pid, GPUs) from a heartbeat dict: the file the running service writes
(`status` in another process) or `live()` of the Service object (the HTTP endpoint in-process).
`render_text()` turns the data into the human-readable `status` output, in English or Chinese.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from . import catalog, i18n
from .calibration import Calibration
from .config import Settings
from .i18n import duration, state_name, t
from .tables import FAILED, LOADING, PROCESSING
from .tasks import TaskQueue


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat(timespec="seconds") if dt else None


def _eta_seconds(now: datetime, started: datetime | None, progress: float) -> float | None:
    """Time left if the rest goes as fast as what is done: elapsed / progress − elapsed."""
    if started is None or not progress or progress <= 0:
        return None
    elapsed = max(0.0, (now - started).total_seconds())
    if progress >= 1:
        return 0.0
    return round(elapsed / progress - elapsed, 1)


def running_summary(dispatcher: Any) -> list[dict]:
    """dispatcher.running_summary(), read from another thread (the dict may change meanwhile)."""
    if dispatcher is None:
        return []
    for _ in range(3):
        try:
            return dispatcher.running_summary()
        except RuntimeError:  # "dictionary changed size during iteration": read again
            continue
    return []


def live(service: Any) -> dict:
    """The same facts the heartbeat file holds, read from a running Service object."""
    dispatcher = getattr(service, "dispatcher", None)
    vram = getattr(dispatcher, "vram", None)
    watcher = getattr(service, "watcher", None)
    web = getattr(service, "web", None)
    started = getattr(service, "_started_at", None)
    return {
        "pid": os.getpid(),
        "worker_id": getattr(service, "worker_id", None),
        "started": started.isoformat(timespec="seconds") if started else None,
        "mode": "cpu" if vram is None else "simulated-gpu" if vram.backend.simulated else "gpu",
        "gpus": vram.snapshot() if vram is not None else [],
        "running": running_summary(dispatcher),
        "watcher_alive": watcher.alive() if watcher is not None else False,
        "http_port": getattr(web, "port", None),
    }


def collect(settings: Settings, queue: TaskQueue, heartbeat: dict | None) -> dict:
    """Everything `status` shows, as plain JSON-able data.

    Keys: service ("running" | "not running"), mode, pid, worker_id, started, http_port,
    status_url, watcher_alive, counts {state: n}, gpus [...], running [...] (with
    elapsed_seconds and eta_seconds), vram_estimates [...], recent_failures [...],
    minutes {summary_status: n}, minutes_failures [...], generated_at (UTC).
    """
    now = queue.clock.now()
    hb = heartbeat or {}
    active = queue.list(status=LOADING, limit=500) + queue.list(status=PROCESSING, limit=500)
    active.sort(key=lambda task: task.id)
    running = []
    for task in active:
        since = task.claimed_at
        running.append({
            "id": task.id, "source": task.source, "model": task.model, "status": task.status,
            "progress": round(task.progress or 0.0, 3), "device": task.device,
            "since": _iso(since),
            "elapsed_seconds": round((now - since).total_seconds(), 1) if since else None,
            # ETA from the transcription phase only: model loading does not scale with progress
            "eta_seconds": _eta_seconds(now, task.processing_at or since, task.progress)
            if task.status == PROCESSING else None,
            "audio_seconds": task.audio_seconds,
        })
    calibration = Calibration(
        queue.engine, queue.clock, confidence_factor=settings.gpu.confidence_factor,
        k=settings.gpu.calibration_k, window=settings.gpu.calibration_samples,
    )
    failures = queue.list(status=FAILED, limit=5)
    return {
        **_minutes(queue),
        "service": "running" if heartbeat else "not running",
        "mode": hb.get("mode"),
        "pid": hb.get("pid"),
        "worker_id": hb.get("worker_id"),
        "started": hb.get("started"),
        "http_port": hb.get("http_port"),
        "status_url": status_url(settings, hb.get("http_port")) if heartbeat else None,
        "watcher_alive": hb.get("watcher_alive"),
        "counts": queue.counts(),
        "gpus": hb.get("gpus", []),
        "running": running,
        "vram_estimates": calibration.table(),
        "recent_failures": [
            {"id": task.id, "source": task.source, "error": task.error_message,
             "kind": task.error_kind, "at": _iso(task.finished_at)}
            for task in failures
        ],
        "generated_at": _iso(now),
    }


def _minutes(queue: TaskQueue) -> dict:
    """The minutes' queue: counts by summary_status, the last failures with their reasons."""
    from sqlalchemy import func, select

    from .db import session_factory
    from .tables import Task

    with session_factory(queue.engine)() as s:
        counts = dict(s.execute(select(Task.summary_status, func.count()).where(
            Task.summary_status.is_not(None)).group_by(Task.summary_status)).all())
        failed = s.execute(select(Task.id, Task.source, Task.summary_error).where(
            Task.summary_status == "failed").order_by(Task.id.desc()).limit(5)).all()
    return {"minutes": counts, "minutes_failures": [
        {"id": i, "source": src, "error": err} for i, src, err in failed]}


def mode_name(mode: str | None, lang: str) -> str:
    return t(f"mode.{mode}", lang) if mode else "?"


def status_url(settings: Settings, port: int | None) -> str | None:
    if not port:
        return None
    host = settings.http.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def render_text(data: dict, lang: str) -> str:
    """The `status` output in English or Simplified Chinese (lang 'en' | 'zh-CN')."""
    out = []
    if data["service"] == "running":
        out.append(t("status.running", lang, mode=mode_name(data.get("mode"), lang),
                     pid=data.get("pid")))
    else:
        out.append(t("status.not_running", lang))
    counts = t("status.list_sep", lang).join(
        t("status.count", lang, state=state_name(state, lang), n=n)
        for state, n in data["counts"].items()
    )
    out.append(t("status.tasks", lang, counts=counts))
    for g in data["gpus"]:
        out.append(t("status.gpu", lang, index=g["index"], name=g["name"],
                     budget=g["budget_mb"], ours=g["reserved_mb"], used=g["used_mb"],
                     total=g["total_mb"], tasks=g["tasks"]))
    for e in data["vram_estimates"]:
        measured = (t("status.measured", lang, mean=e["measured_mean_mb"], n=e["samples"])
                    if e["samples"] else t("status.not_measured", lang))
        model = e["model"] if e.get("engine", catalog.OPENAI) == catalog.OPENAI else (
            f"{e['model']} ({e['engine']}, {e['precision']})")
        out.append(t("status.estimate", lang, model=model, gpu=e["gpu"],
                     estimate=e["estimate_mb"], default=e["default_mb"], measured=measured))
    for r in data["running"]:
        line = t("status.running_task", lang, id=r["id"], state=state_name(r["status"], lang),
                 percent=f"{r['progress'] * 100:.0f}", model=r["model"], device=r["device"],
                 file=r["source"])
        if r.get("eta_seconds") is not None:
            line += t("status.eta", lang, elapsed=duration(r["elapsed_seconds"], lang),
                      eta=duration(r["eta_seconds"], lang))
        elif r.get("elapsed_seconds") is not None:
            line += t("status.elapsed", lang, elapsed=duration(r["elapsed_seconds"], lang))
        out.append(line)
    if data["recent_failures"]:
        out.append(t("status.failures", lang))
        for f in data["recent_failures"]:
            error = i18n.reason(f.get("kind"), f.get("error"), lang)
            out.append(t("status.failure", lang, id=f["id"], file=f["source"], error=error))
    if data.get("minutes"):
        counts = t("status.list_sep", lang).join(
            t("status.count", lang, state=t(f"minutes.{k}", lang), n=n)
            for k, n in sorted(data["minutes"].items()))
        out.append(t("status.minutes", lang, counts=counts))
        for f in data.get("minutes_failures", []):
            out.append(t("status.minutes_failure", lang, id=f["id"], file=f["source"],
                         error=f["error"]))
    if data.get("status_url"):
        out.append(t("status.http", lang, url=data["status_url"]))
    return "\n".join(out)
