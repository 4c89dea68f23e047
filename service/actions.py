"""The user's commands on one task (retry, cancel): the web page and `python app.py retry`
run the same code.

`retry` brings a failed file back from failed/ before requeueing it; a running task that is
cancelled is stopped by the dispatcher at its next lease renewal.
"""

from __future__ import annotations

import os

from . import i18n
from .config import Settings
from .files import move_source
from .fsops import safe_join
from .tables import CANCELLED, FAILED
from .tasks import TaskQueue


class ActionError(ValueError):
    """The command cannot be done; ``key`` names an i18n message, ``kw`` fills it in."""

    def __init__(self, key: str, status: int = 409, **kw: object) -> None:
        super().__init__(key)
        self.key, self.status, self.kw = key, status, kw

    def fields(self, lang: str | None) -> dict[str, object]:
        """``kw`` for the message in ``lang``: a task state by its name in that language."""
        kw = dict(self.kw)
        if "state" in kw:
            kw["state"] = i18n.state_name(str(kw["state"]), lang)
        return kw


def retry(settings: Settings, queue: TaskQueue, task_id: int) -> None:
    """failed/cancelled → pending, with the source moved back from failed/ if it went there
    (from the place its row recorded: that name may have been taken there, " (2)")."""
    task = queue.get(task_id)
    if task is None:
        raise ActionError("action.no_task", status=404, id=task_id)
    if task.status not in (FAILED, CANCELLED):
        raise ActionError("action.not_retryable", id=task_id, state=task.status)
    # A new file of the same name may be in the inbox (or being transcribed) meanwhile: moving
    # this one back would rename it "talk (2).wav" and the retry would then fail.
    replaced = task.source_state != "inbox" and os.path.lexists(
        safe_join(settings.inbox, task.source))
    if replaced or queue.open_task_for(task.source) is not None:
        raise ActionError("action.name_taken", id=task_id, file=task.source)
    if task.source_state == "failed" and move_source(
            settings.failed, task.source, settings.inbox, back=True,
            moved_to=task.moved_to) is None:
        raise ActionError("action.source_gone", id=task_id, file=task.source)
    if queue.retry(task_id) is None:
        raise ActionError("action.not_retryable", id=task_id, state=task.status)
    queue.set_source_state(task_id, "inbox", moved_to=None)


def cancel(queue: TaskQueue, task_id: int) -> None:
    """A pending or running task → cancelled (the file stays where it is)."""
    if queue.cancel(task_id) is None:
        task = queue.get(task_id)
        if task is None:
            raise ActionError("action.no_task", status=404, id=task_id)
        raise ActionError("action.not_cancellable", id=task_id, state=task.status)
