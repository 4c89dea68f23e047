"""The user's commands on one task (retry, cancel), shared by the web page.

`retry` brings a failed file back from failed/ before requeueing it, as `python app.py retry`
does; a running task that is cancelled is stopped by the dispatcher at its next lease renewal.
"""

from __future__ import annotations

from .config import Settings
from .files import move_source
from .tables import CANCELLED, FAILED
from .tasks import TaskQueue


class ActionError(ValueError):
    """The command cannot be done; ``key`` names an i18n message, ``kw`` fills it in."""

    def __init__(self, key: str, status: int = 409, **kw: object) -> None:
        super().__init__(key)
        self.key, self.status, self.kw = key, status, kw


def retry(settings: Settings, queue: TaskQueue, task_id: int) -> None:
    """failed/cancelled → pending, with the source moved back from failed/ if it went there."""
    task = queue.get(task_id)
    if task is None:
        raise ActionError("action.no_task", status=404, id=task_id)
    if task.status not in (FAILED, CANCELLED):
        raise ActionError("action.not_retryable", id=task_id, state=task.status)
    if task.source_state == "failed" and move_source(settings.failed, task.source,
                                                     settings.inbox, back=True) is None:
        raise ActionError("action.source_gone", id=task_id, file=task.source)
    if queue.retry(task_id) is None:
        raise ActionError("action.not_retryable", id=task_id, state=task.status)
    queue.set_source_state(task_id, "inbox")


def cancel(queue: TaskQueue, task_id: int) -> None:
    """A pending or running task → cancelled (the file stays where it is)."""
    if queue.cancel(task_id) is None:
        task = queue.get(task_id)
        if task is None:
            raise ActionError("action.no_task", status=404, id=task_id)
        raise ActionError("action.not_cancellable", id=task_id, state=task.status)
