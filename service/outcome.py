"""What happens to the source file once its task is settled (and to a dead attempt's debris).

completed → the source moves to archive/<relative path>.
failed    → outbox/<relative folder>/<stem>.error.txt explains why in plain words, and the source
            moves to failed/<relative path>. Nothing is deleted.
"""

from __future__ import annotations

import logging
from pathlib import PurePosixPath

from . import outputs
from .config import Settings
from .files import move_source
from .tables import COMPLETED, FAILED, Task
from .tasks import TaskQueue

log = logging.getLogger(__name__)

HINTS = {
    "not_audio": "Check that the file plays in a media player; copy a working file into the inbox.",
    "bad_sidecar": "Fix the .json settings file next to the audio, then copy both into the inbox.",
    "model_missing": "Put the model file where the message says, then copy the audio into the "
    "inbox again.",
    "too_long": "Split the recording into shorter parts, or raise transcribe.max_audio_seconds.",
}


def settle(settings: Settings, queue: TaskQueue, task: Task) -> None:
    """Move the source (and write the error report) for a task in a final state.

    Safe to run twice for one task (a node starting up while another is settling it): the
    move decides, and a source already moved by someone else is never recorded as missing.
    """
    if task.status not in (COMPLETED, FAILED):
        return
    dest = settings.archive if task.status == COMPLETED else settings.failed
    try:
        if move_source(settings.inbox, task.source, dest):
            queue.set_source_state(task.id, "archived" if task.status == COMPLETED else "failed")
        elif not queue.set_source_state(task.id, "missing", only_from="inbox"):
            return  # another node (or our own start-up pass) settled it first: nothing to do
    except (OSError, ValueError) as err:
        # The task's outcome stands; the file stays where it is and the row says so.
        log.error("task %s: could not move %s: %s", task.id, task.source, err)
        queue.update_fields(task.id, error_message=(task.error_message or "") +
                            f" (the source file could not be moved: {err})")
    if task.status == FAILED:
        try:
            _report(settings, task)
        except (OSError, ValueError) as err:  # e.g. the outbox itself is the problem
            log.error("task %s: could not write the error report: %s", task.id, err)


def discard_partial(settings: Settings, task: Task) -> None:
    """An attempt died mid-write (killed, crashed, timed out, cancelled, its node gone): remove
    the half-written temp files of its outputs. Finished transcripts stay untouched."""
    try:
        out_dir = outputs.output_dir_for(settings.outbox, PurePosixPath(task.source))
        outputs.remove_partial(out_dir, task.output_stem)
    except (OSError, ValueError) as err:
        log.warning("task %s: could not check for partial outputs: %s", task.id, err)


def _report(settings: Settings, task: Task) -> None:
    rel = PurePosixPath(task.source)
    out_dir = outputs.output_dir_for(settings.outbox, rel)
    outputs.write_error_report(
        out_dir,
        task.output_stem,
        source_name=task.source,
        message=task.error_message or "unknown error",
        moved_to=settings.failed / rel.parent / rel.name,
        attempts=task.attempts,
        when=task.finished_at or task.created_at,
        hint=HINTS.get(task.error_kind or ""),
    )
