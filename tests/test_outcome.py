"""Settling a finished task: the source moves to archive/ or failed/, nothing is lost, and two
nodes settling the same task at once agree on where the file went."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from service import actions, audio, db, outcome
from service.config import Settings, load_settings
from service.tasks import NewTask, TaskQueue
from tests.conftest import write_settings


def _site(tmp_path: Path, overrides: dict):
    s = load_settings(write_settings(tmp_path / "站点", overrides))
    db.migrate(s.database_url)
    q = TaskQueue(db.make_engine(s.database_url))
    yield s, q
    q.engine.dispose()


@pytest.fixture
def env(tmp_path: Path):
    yield from _site(tmp_path, {})


@pytest.fixture
def zh_env(tmp_path: Path):
    yield from _site(tmp_path, {"ui": {"language": "zh-CN"}})


def finished(s: Settings, q: TaskQueue, name: str, *, ok: bool, content: bytes = b"audio"):
    src = s.inbox / name
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(content)
    st = src.stat()
    tid = q.enqueue(NewTask(source=name, size=st.st_size, mtime_ns=st.st_mtime_ns,
                            model="tiny.en")).id
    q.claim(tid, "h:1", 60)
    if not ok:
        return q.fail(tid, "h:1", "not_audio", "Not an audio file.", retryable=False,
                      backoff_seconds=0)
    q.start_processing(tid, "h:1", 0.1)
    return q.complete(tid, "h:1", transcribe_seconds=1.0, outputs=[])


def test_the_error_report_is_in_chinese_when_the_ui_is(zh_env) -> None:
    s, q = zh_env
    outcome.settle(s, q, finished(s, q, "坏.mp3", ok=False))
    report = (s.outbox / "坏.mp3.error.txt").read_text(encoding="utf-8")
    assert "DropScribe 无法转写“坏.mp3”。" in report
    assert "出了什么问题：不是可解码的音频或视频文件。（详细信息：Not an audio file.）" in report
    assert "共尝试 1 次" in report and "下一步：文件已移到" in report
    assert "提示：请确认该文件能在播放器中播放" in report
    assert "What went wrong" not in report


def test_the_chinese_report_says_a_known_detail_in_chinese_too(zh_env) -> None:
    s, q = zh_env
    task = finished(s, q, "会议/坏.mp3", ok=False)
    q.update_fields(task.id, error_message=audio.MSG_NOT_MEDIA)
    outcome.settle(s, q, q.get(task.id))
    report = (s.outbox / "会议" / "坏.mp3.error.txt").read_text(encoding="utf-8")
    assert ("出了什么问题：不是可解码的音频或视频文件。（这不是音频或视频文件（DropScribe 无法读取"
            "其内容）。）") in report
    assert "audio" not in report


def test_completed_source_is_archived_under_its_folder(env) -> None:
    s, q = env
    task = finished(s, q, "团队/周会 1.mp3", ok=True)
    (s.inbox / "团队/周会 1.mp3.json").write_text("{}", encoding="utf-8")
    outcome.settle(s, q, task)
    assert (s.archive / "团队/周会 1.mp3").read_bytes() == b"audio"
    assert (s.archive / "团队/周会 1.mp3.json").is_file()  # the sidecar travels along
    assert not (s.inbox / "团队/周会 1.mp3").exists() and (s.inbox / "团队").is_dir()
    assert q.get(task.id).source_state == "archived"


def test_failed_source_moves_to_failed_with_a_plain_report(env) -> None:
    s, q = env
    task = finished(s, q, "坏.mp3", ok=False)
    outcome.settle(s, q, task)
    assert (s.failed / "坏.mp3").is_file() and q.get(task.id).source_state == "failed"
    report = (s.outbox / "坏.mp3.error.txt").read_text(encoding="utf-8")
    assert "坏.mp3" in report and "Not an audio file." in report
    assert "plays in a media player" in report  # the hint for not_audio


def test_each_source_has_its_own_error_report_and_success_removes_only_its_own(env) -> None:
    """x.mp3 and x.wav failing must not overwrite each other's report, and a later x.flac
    success must not delete them (issue 15, smaller items)."""
    s, q = env
    for name in ("x.mp3", "x.wav"):
        outcome.settle(s, q, finished(s, q, name, ok=False))
    assert sorted(p.name for p in s.outbox.iterdir()) == ["x.mp3.error.txt", "x.wav.error.txt"]
    outcome.settle(s, q, finished(s, q, "x.flac", ok=True))
    assert sorted(p.name for p in s.outbox.iterdir()) == ["x.mp3.error.txt", "x.wav.error.txt"]
    outcome.settle(s, q, finished(s, q, "x.mp3", ok=True))  # fixed and dropped again
    assert sorted(p.name for p in s.outbox.iterdir()) == ["x.wav.error.txt"]


def test_a_name_taken_in_the_archive_is_never_overwritten(env) -> None:
    s, q = env
    (s.archive / "a.mp3").parent.mkdir(parents=True, exist_ok=True)
    (s.archive / "a.mp3").write_bytes(b"older")
    outcome.settle(s, q, finished(s, q, "a.mp3", ok=True, content=b"newer"))
    assert (s.archive / "a.mp3").read_bytes() == b"older"
    assert (s.archive / "a (2).mp3").read_bytes() == b"newer"
    # the row says where its own recording went (the web player and a retry read it there)
    assert q.list()[0].moved_to == "a (2).mp3"


def test_a_retry_brings_back_its_own_file_when_the_name_was_taken_in_failed(env) -> None:
    """Two different recordings named team/talk.wav both failed: retrying the second brings
    back the second, not the first one that kept the plain name in failed/."""
    s, q = env
    first = finished(s, q, "team/talk.wav", ok=False, content=b"first take")
    outcome.settle(s, q, first)
    second = finished(s, q, "team/talk.wav", ok=False, content=b"second take, longer")
    outcome.settle(s, q, second)
    assert q.get(second.id).moved_to == "team/talk (2).wav"
    report = (s.outbox / "team" / "talk.wav.error.txt").read_text(encoding="utf-8")
    assert str(s.failed / "team" / "talk (2).wav") in report  # where this recording really is
    actions.retry(s, q, second.id)
    assert (s.inbox / "team" / "talk.wav").read_bytes() == b"second take, longer"
    assert (s.failed / "team" / "talk.wav").read_bytes() == b"first take"
    row = q.get(second.id)
    assert (row.status, row.source_state, row.moved_to) == ("pending", "inbox", None)
    with pytest.raises(actions.ActionError) as err:  # its name is in the inbox again now
        actions.retry(s, q, first.id)
    assert err.value.key == "action.name_taken"
    assert (s.failed / "team" / "talk.wav").read_bytes() == b"first take"  # left where it was


def test_settling_twice_keeps_the_first_answer(env) -> None:
    """A node starting up reads the row as still 'inbox' while another node moves the file."""
    s, q = env
    task = finished(s, q, "x.mp3", ok=True)
    outcome.settle(s, q, task)
    outcome.settle(s, q, task)  # the stale copy of the row: the source is already gone
    row = q.get(task.id)
    assert row.source_state == "archived" and row.error_message is None
    assert (s.archive / "x.mp3").is_file() and not (s.archive / "x (2).mp3").exists()


def test_nodes_settling_the_same_tasks_at_once_lose_nothing(env) -> None:
    s, q = env
    tasks = [finished(s, q, f"d/{i}.mp3", ok=True, content=str(i).encode()) for i in range(30)]
    go = threading.Barrier(3)

    def node() -> None:
        other = TaskQueue(db.make_engine(s.database_url))
        go.wait()
        for task in tasks:
            outcome.settle(s, other, task)

    threads = [threading.Thread(target=node) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for i, task in enumerate(tasks):
        assert (s.archive / f"d/{i}.mp3").read_bytes() == str(i).encode()
        row = q.get(task.id)
        assert row.source_state == "archived", (i, row.source_state, row.error_message)
        assert row.error_message is None
    assert sorted(p.name for p in (s.archive / "d").iterdir()) == sorted(
        f"{i}.mp3" for i in range(30))


def test_a_source_that_could_not_be_moved_is_reported_where_it_is(env) -> None:
    """The report never says the file went to failed/ when it is still in the inbox; once the
    move succeeds (retried every minute), the report says where it went."""
    s, q = env
    s.failed.write_bytes(b"")  # failed/ is a file: every move there fails
    task = finished(s, q, "团队/坏.mp3", ok=False)
    outcome.settle(s, q, task)
    assert (s.inbox / "团队/坏.mp3").read_bytes() == b"audio"
    task = q.get(task.id)
    assert task.source_state == "inbox" and "could not be moved" in task.error_message
    report = (s.outbox / "团队" / "坏.mp3.error.txt").read_text(encoding="utf-8")
    assert f"still at {s.inbox / '团队' / '坏.mp3'}" in report
    assert f"python app.py retry {task.id}" in report and "was moved" not in report

    s.failed.unlink()
    s.failed.mkdir()
    outcome.settle(s, q, task)
    assert (s.failed / "团队/坏.mp3").read_bytes() == b"audio"
    report = (s.outbox / "团队" / "坏.mp3.error.txt").read_text(encoding="utf-8")
    assert f"moved to {s.failed / '团队' / '坏.mp3'}" in report and "still at" not in report


def test_a_source_gone_before_settling_is_not_reported_as_moved(zh_env) -> None:
    s, q = zh_env
    task = finished(s, q, "坏.mp3", ok=False)
    (s.inbox / "坏.mp3").unlink()
    outcome.settle(s, q, task)
    assert q.get(task.id).source_state == "missing"
    report = (s.outbox / "坏.mp3.error.txt").read_text(encoding="utf-8")
    assert "任务结束时文件已不在收件箱中" in report and "文件已移到" not in report
    outcome.settle(s, q, q.get(task.id))  # settled again (a restart): it says the same
    assert "任务结束时文件已不在收件箱中" in (s.outbox / "坏.mp3.error.txt").read_text("utf-8")


def test_a_move_whose_row_never_learned_of_it_is_recorded_not_called_missing(env) -> None:
    """A node moved the source to failed/ (as 'x (2).mp3': the name was taken) and stopped
    before recording it: settling again finds this very file there."""
    from service.files import move_source

    s, q = env
    (s.failed).mkdir(exist_ok=True)
    (s.failed / "x.mp3").write_bytes(b"another recording")
    task = finished(s, q, "x.mp3", ok=False, content=b"this one")
    assert move_source(s.inbox, "x.mp3", s.failed) == s.failed / "x (2).mp3"
    outcome.settle(s, q, task)
    task = q.get(task.id)
    assert (task.source_state, task.moved_to) == ("failed", "x (2).mp3")
    report = (s.outbox / "x.mp3.error.txt").read_text(encoding="utf-8")
    assert f"moved to {s.failed / 'x (2).mp3'}" in report and "no longer" not in report
