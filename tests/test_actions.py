"""retry and cancel as the web page runs them: real SQLite, real files in failed/ and inbox/."""

from __future__ import annotations

import pytest

from service import actions
from service.config import Settings
from service.files import move_source
from service.tasks import NewTask, TaskQueue


def failed_task(settings: Settings, queue: TaskQueue, name: str) -> int:
    (settings.inbox / "team").mkdir(parents=True, exist_ok=True)
    (settings.inbox / "team" / name).write_bytes(b"not audio")
    (settings.inbox / "team" / f"{name}.json").write_text('{"priority": 2}', encoding="utf-8")
    task = queue.enqueue(NewTask(source=f"team/{name}", size=9, mtime_ns=1, model="tiny.en"),
                         failed=("not_audio", "not audio"))
    move_source(settings.inbox, task.source, settings.failed)
    queue.set_source_state(task.id, "failed")
    return task.id


def test_retry_brings_the_file_back_from_failed(settings: Settings, queue: TaskQueue) -> None:
    task_id = failed_task(settings, queue, "会议.mp3")
    actions.retry(settings, queue, task_id)
    task = queue.get(task_id)
    assert task.status == "pending" and task.attempts == 0 and task.source_state == "inbox"
    assert (settings.inbox / "team" / "会议.mp3").read_bytes() == b"not audio"
    assert (settings.inbox / "team" / "会议.mp3.json").is_file()  # the sidecar comes along
    assert not (settings.failed / "team" / "会议.mp3").exists()
    with pytest.raises(actions.ActionError) as err:
        actions.retry(settings, queue, task_id)  # pending now: nothing to retry
    assert err.value.key == "action.not_retryable" and err.value.status == 409


def test_retry_when_the_file_is_gone_says_so(settings: Settings, queue: TaskQueue) -> None:
    task_id = failed_task(settings, queue, "gone.mp3")
    (settings.failed / "team" / "gone.mp3").unlink()
    with pytest.raises(actions.ActionError) as err:
        actions.retry(settings, queue, task_id)
    assert err.value.key == "action.source_gone" and err.value.kw["file"] == "team/gone.mp3"
    assert queue.get(task_id).status == "failed"  # unchanged
    with pytest.raises(actions.ActionError) as err:
        actions.retry(settings, queue, 999)
    assert err.value.key == "action.no_task" and err.value.status == 404


def test_cancel_waiting_and_refuse_finished(settings: Settings, queue: TaskQueue) -> None:
    task = queue.enqueue(NewTask(source="a.wav", size=1, mtime_ns=1, model="tiny.en"))
    actions.cancel(queue, task.id)
    assert queue.get(task.id).status == "cancelled"
    with pytest.raises(actions.ActionError) as err:
        actions.cancel(queue, task.id)
    assert err.value.key == "action.not_cancellable" and err.value.kw["state"] == "cancelled"
    with pytest.raises(actions.ActionError) as err:
        actions.cancel(queue, 999)
    assert err.value.key == "action.no_task"
    actions.retry(settings, queue, task.id)  # a cancelled file can run again
    assert queue.get(task.id).status == "pending"
