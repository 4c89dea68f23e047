"""What happens to the source file once its task is settled (and to a dead attempt's debris).

completed → the source moves to archive/<relative path>.
failed    → outbox/<relative folder>/<file name>.error.txt explains why in plain words, and
            the source moves to failed/<relative path>. Nothing is deleted.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path, PurePosixPath

from . import fsops, i18n, outputs
from .config import Settings
from .files import find_moved, move_source, moved_rel, stored_path
from .fsops import display
from .tables import COMPLETED, FAILED, Task
from .tasks import TaskQueue

log = logging.getLogger(__name__)

REPORT_SUFFIX = ".error.txt"

HINT_KINDS = frozenset({"not_audio", "bad_sidecar", "model_missing", "too_long",
                        "path_too_long", "link", "bad_name", "held",
                        "gpu_library"})  # i18n "hint.<kind>"


def settle(settings: Settings, queue: TaskQueue, task: Task) -> None:
    """Move the source (and write the error report) for a task in a final state.

    Safe to run twice for one task (a node starting up while another is settling it): the
    move decides, and a source already moved by someone else is never recorded as missing.
    A source overwritten while it was processed (same name, new recording) is not the file
    that was transcribed: it stays in the inbox, and the watcher records it as a new task.
    """
    if task.status not in (COMPLETED, FAILED):
        return
    moved = task.moved_to  # under archive/ or failed/: recorded by whoever moved it
    kept = False  # the move failed: the source is still in the inbox
    gone = task.source_state == "missing"
    if task.source_state == "inbox":
        if _replaced(settings, task):
            log.warning("task %s: %s", task.id, i18n.t("source.changed", "en"))
            queue.set_source_state(task.id, "replaced", only_from="inbox")
            return
        dest = settings.archive if task.status == COMPLETED else settings.failed
        state = "archived" if task.status == COMPLETED else "failed"
        try:
            if (target := move_source(settings.inbox, task.source, dest)) is not None:
                moved = moved_rel(target, dest)
                queue.set_source_state(task.id, state, moved_to=moved)
            elif (target := find_moved(dest, task.source, task.size, task.mtime_ns)) is not None:
                # moved, but a stop came before the row learned where (or another node's move)
                moved = moved_rel(target, dest)
                queue.set_source_state(task.id, state, only_from="inbox", moved_to=moved)
            elif not queue.set_source_state(task.id, "missing", only_from="inbox"):
                return  # another node (or our own start-up pass) settled it first
            else:
                gone = True
        except (OSError, ValueError) as err:
            kept = True
            # The task's outcome stands; the file stays where it is and the row says so.
            log.error("task %s: could not move %s (tried again every minute): %s", task.id,
                      display(task.source), err)
            if " (the source file could not be moved: " not in (task.error_message or ""):
                queue.update_fields(task.id, error_message=i18n.t(  # said in Chinese by reasons
                    "detail.not_moved", "en", message=task.error_message or "", error=err))
    try:
        if task.status == FAILED:
            _report(settings, task, moved, kept=kept, gone=gone)
        else:
            _remove_report(settings, task)  # a success makes an earlier failure report stale
    except (OSError, ValueError) as err:  # e.g. the outbox itself is the problem
        log.error("task %s: could not write or remove the error report: %s", task.id, err)


def _replaced(settings: Settings, task: Task) -> bool:
    """Is the file now in the inbox another one than the task recorded (size or mtime)?"""
    if task.size is None or task.mtime_ns is None:
        return False
    try:
        st = os.lstat(fsops.safe_join(settings.inbox, task.source))
    except (OSError, ValueError):
        return False  # gone: the move reports it
    return (st.st_size, st.st_mtime_ns) != (task.size, task.mtime_ns)


def report_name(task: Task) -> str:
    """``<source file name>.error.txt``: ``x.mp3`` and ``x.wav`` each get their own report,
    kept under the 255-byte name limit and Windows' naming rules (fsops)."""
    name = fsops.fit_name(PurePosixPath(task.source).name, len(REPORT_SUFFIX))
    return fsops.windows_safe_name(name) + REPORT_SUFFIX


def _remove_report(settings: Settings, task: Task) -> None:
    out_dir = outputs.output_dir_for(settings.outbox, PurePosixPath(task.source))
    stale = out_dir / report_name(task)
    if os.path.lexists(stale):
        os.unlink(stale)


def discard_partial(settings: Settings, task: Task) -> None:
    """An attempt died mid-write (killed, crashed, timed out, cancelled, its node gone): remove
    the half-written temp files of its outputs. Finished transcripts stay untouched."""
    try:
        out_dir = outputs.output_dir_for(settings.outbox, PurePosixPath(task.source))
        outputs.remove_partial(out_dir, task.output_stem)
    except (OSError, ValueError) as err:
        log.warning("task %s: could not check for partial outputs: %s", task.id, err)


def _report_place(settings: Settings, task: Task) -> tuple[Path, str]:
    """Where the report goes: beside where the transcript would be, or — when that path is
    itself too long to write (the very failure being reported) — the outbox's top folder,
    named after the whole relative path so reports of equal names in other folders differ."""
    out_dir = outputs.output_dir_for(settings.outbox, PurePosixPath(task.source))
    name = report_name(task)
    try:
        fsops.check_path_length(out_dir / name)
    except fsops.PathTooLongError:
        parts = fsops.split_relative(task.source)
        flat = "_".join(parts)
        if len(flat.encode("utf-8", "surrogateescape")) + len(REPORT_SUFFIX) > 200:
            folder = hashlib.sha1("/".join(parts[:-1]).encode("utf-8", "surrogateescape"))
            flat = f"{folder.hexdigest()[:8]}_{fsops.fit_name(parts[-1], 60)}"
        return Path(settings.outbox), fsops.windows_safe_name(flat)
    return out_dir, name[: -len(REPORT_SUFFIX)]


def _report(settings: Settings, task: Task, moved: str | None, *, kept: bool = False,
            gone: bool = False) -> None:
    """The plain-words report; `moved` is where the source went under failed/ (the name it
    has there, " (2)" if its own was taken), else it is named as it would have been. `kept`:
    the move failed and the source is still in the inbox; `gone`: it had left the inbox."""
    lang = settings.ui_language
    out_dir, stem = _report_place(settings, task)
    outputs.write_error_report(
        out_dir,
        stem,
        source_name=task.source,
        message=i18n.reason(task.error_kind, task.error_message, lang),
        moved_to=stored_path(settings.failed, task.source, moved),
        kept_at=str(fsops.safe_join(settings.inbox, task.source)) if kept else None,
        gone=gone,
        task_id=task.id,
        attempts=task.attempts,
        when=task.finished_at or task.created_at,
        hint=i18n.t(f"hint.{task.error_kind}", lang) if task.error_kind in HINT_KINDS else None,
        lang=lang,
    )
