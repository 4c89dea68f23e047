"""A claimed task → the `Job` its worker runs: the parent's checks before a file starts.

The worker never reads the database or settings, so everything it needs is decided here, in the
parent, at the start: the source path joined safely inside the inbox, the output folder inside
the outbox, a transcript name no other file of that folder uses (on any node), the decoding
options merged from settings and sidecar. What cannot work is refused now with a plain reason
(ValueError: an unsafe path, invalid options, a path too long for Windows) instead of a worker
failing later.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from . import fsops, options, outputs
from .config import Settings
from .messages import Job
from .tables import Task
from .tasks import TaskQueue


def refusal(err: ValueError) -> tuple[str, str]:
    """(error kind, plain message) for a task job_for refused: it fails for good, since a retry
    would be refused the same way."""
    if isinstance(err, options.OptionsError):
        return "bad_options", f"Invalid transcription options: {err}"
    if isinstance(err, fsops.PathTooLongError):
        return "path_too_long", f"Cannot write the transcripts: {err}"
    return "unsafe_path", f"Refused: {err}"  # never written outside the outbox


def output_stem(queue: TaskQueue, task: Task, out_dir: Path) -> str:
    """The task's transcript name: fixed at its first start (kept in its options, so a retry
    writes the same files), free of the names other running tasks of its folder were given."""
    if "output_stem" not in (task.options or {}):
        folder = PurePosixPath(task.source).parent  # names given to running tasks, any node
        taken = {t.output_stem for t in queue.active()
                 if t.id != task.id and PurePosixPath(t.source).parent == folder}
        stem = outputs.transcript_stem(out_dir, PurePosixPath(task.source).stem, taken)
        task.options = {**(task.options or {}), "output_stem": stem}
        queue.update_fields(task.id, options=task.options)
    return task.output_stem


def job_for(settings: Settings, queue: TaskQueue, task: Task, gpu: int | None,
            gpu_uuid: str | None) -> Job:
    """The job for `task` on card `gpu` (None: the CPU, or a simulated card, which the worker
    must not try to open). Raises ValueError (options.OptionsError, fsops.PathTooLongError,
    an unsafe path) when the task cannot start; `refusal` says why in words."""
    cfg = settings
    rel = PurePosixPath(task.source)
    out_dir = outputs.output_dir_for(cfg.outbox, rel)
    formats = task.options.get("output_formats") or cfg.transcribe.output_formats
    threads = cfg.cpu.threads_per_task or max(
        1, (os.cpu_count() or 1) // cfg.cpu.max_concurrent_tasks
    )
    stem = output_stem(queue, task, out_dir)
    longest = max((f".{fmt}" for fmt in formats), key=len)
    fsops.check_path_length(out_dir / f"{stem}{longest}")  # too long for the OS: say so now
    return Job(
        task_id=task.id,
        source_path=str(outputs.safe_join(cfg.inbox, task.source)),
        source_name=task.source,
        model=task.model,
        models_dir=str(cfg.models_dir),
        allow_download=cfg.models.allow_download,
        out_dir=str(out_dir),
        stem=stem,
        formats=tuple(formats),
        language=task.language,
        task=task.task,
        decoding=options.resolve(cfg.transcribe, task.options or {}).model_dump(mode="json"),
        gpu=gpu,
        gpu_uuid=gpu_uuid,
        threads=threads,
        progress_seconds=cfg.scheduler.progress_seconds,
        keep_warm_seconds=cfg.models.keep_warm_seconds,
        inbox=str(cfg.inbox),
        outbox=str(cfg.outbox),
        piece_seconds=cfg.memory.piece_minutes * 60,
        audio_seconds=task.audio_seconds or 0.0,
        ui_language=cfg.ui_language,
    )
