"""Minutes against a real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions wire
format (tests/chat_server.py), a real SQLite task table and a manual clock for the backoff.

Request shape, chunking of a long transcript and merging, the endpoint down (retried later,
the transcript untouched), malformed replies, timeouts, giving up with a reason in status and
`.minutes.error.txt`, and `python app.py minutes ID` to try again.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from service import minutes, outputs, status, statuspage
from service.clock import ManualClock
from service.config import Settings, load_settings
from service.minutes import Minutes
from service.tasks import NewTask, TaskQueue
from tests.chat_server import ChatServer
from tests.conftest import write_settings
from tests.svc import app

LINES = ["[Speaker 1] Good morning, let us start with the budget.",
         "[Speaker 2] Marketing needs ten percent more.",
         "[Speaker 1] Then engineering stays flat.",
         "[Speaker 3] I will send the server plan by Friday."]


def _setup(tmp_path: Path, server: ChatServer, clock: ManualClock, ui: str = "en",
           **summary) -> tuple:
    cfg = {"summary": {"enabled": True, "url": server.url, "model": "qwen2.5-instruct",
                       "api_key": "sk-local-123", "backoff_seconds": 60, "max_attempts": 3,
                       "timeout_seconds": 5, **summary},
           "ui": {"language": ui}}
    path = write_settings(tmp_path / "cfg", cfg)
    settings = load_settings(path)
    queue = TaskQueue(_engine(settings), clock)
    task = queue.enqueue(NewTask(source="team/周会.mp3", size=1, mtime_ns=1, model="tiny.en"))
    queue.claim(task.id, "n1", 60, device="cpu")
    queue.start_processing(task.id, "n1", 0.1)
    out_dir = outputs.output_dir_for(settings.outbox, Path("team/周会.mp3"))
    out_dir.mkdir(parents=True, exist_ok=True)  # output_dir_for takes the folder at once
    (out_dir / "周会.txt").write_text("\n".join(LINES) + "\n", encoding="utf-8")
    queue.complete(task.id, "n1", transcribe_seconds=1.0, audio_seconds=30.0,
                   detected_language="en", outputs=[], **minutes.wanted(settings))
    return path, settings, queue, task.id, out_dir


def _engine(settings: Settings) -> Engine:
    from service import db

    db.migrate(settings.database_url)
    return db.make_engine(settings.database_url)


def test_request_shape_and_the_minutes_file(tmp_path: Path, chat_server: ChatServer,
                                            clock: ManualClock) -> None:
    _path, settings, queue, tid, out_dir = _setup(tmp_path, chat_server, clock)
    m = Minutes(settings, queue, clock, "n1")
    assert m.run_once() is True
    assert m.run_once() is False  # nothing else is due
    assert chat_server.paths == ["/v1/chat/completions"]
    body, headers = chat_server.requests[0], chat_server.headers[0]
    assert body["model"] == "qwen2.5-instruct" and body["stream"] is False
    assert body["max_tokens"] == 2048 and 0 <= body["temperature"] <= 1
    assert [msg["role"] for msg in body["messages"]] == ["system", "user"]
    assert "## Action items" in body["messages"][0]["content"]
    assert "English" in body["messages"][0]["content"]
    assert body["messages"][1]["content"] == "\n".join(LINES)
    assert headers["Authorization"] == "Bearer sk-local-123"
    assert headers["Content-Type"] == "application/json"
    text = (out_dir / "周会.minutes.md").read_text(encoding="utf-8")
    assert text.startswith("# Minutes: 周会.mp3\n\n## Summary\nA meeting (4 lines given).")
    row = queue.get(tid)
    assert (row.summary_status, row.summary_attempts, row.summary_error) == ("done", 1, None)


def test_a_chinese_transcript_gets_chinese_instructions(
        tmp_path: Path, chat_server: ChatServer, clock: ManualClock) -> None:
    _path, settings, queue, tid, out_dir = _setup(tmp_path, chat_server, clock)
    queue.update_fields(tid, detected_language="zh")
    Minutes(settings, queue, clock, "n1").run_once()
    system = chat_server.requests[0]["messages"][0]["content"]
    assert "会议纪要" in system and "简体中文" in system and "## 待办事项" in system
    written = (out_dir / "周会.minutes.md").read_text(encoding="utf-8")
    assert written.startswith("# 会议纪要：周会.mp3")


def test_a_long_transcript_goes_in_parts_that_fit_and_is_merged(
        tmp_path: Path, chat_server: ChatServer, clock: ManualClock) -> None:
    """1200 turns, a 2048-token model: every request fits its context (estimated cautiously),
    every line is sent once, in order, and the notes are merged into one set of minutes."""
    _path, settings, queue, tid, out_dir = _setup(tmp_path, chat_server, clock,
                                                  context_tokens=2048)
    long_lines = [f"[Speaker {i % 3 + 1}] 第{i}项：我们讨论了预算和发布计划 number {i}."
                  for i in range(1200)]
    (out_dir / "周会.txt").write_text("\n".join(long_lines), encoding="utf-8")
    Minutes(settings, queue, clock, "n1").run_once()
    assert queue.get(tid).summary_status == "done"
    reqs = chat_server.requests
    parts = [r for r in reqs if "第 " in r["messages"][0]["content"] or
             " of one meeting's" in r["messages"][0]["content"]]
    assert len(parts) > 5
    for r in reqs:
        used = sum(minutes.estimate_tokens(msg["content"]) for msg in r["messages"])
        assert used + r["max_tokens"] <= 2048, used
    sent = [line for r in parts for line in r["messages"][1]["content"].splitlines()]
    assert sent == long_lines
    final = reqs[-1]
    assert "Merge" in final["messages"][0]["content"]
    assert final["messages"][1]["content"].count("- notes on") >= 2
    assert "## Summary" in (out_dir / "周会.minutes.md").read_text(encoding="utf-8")


def test_chunks_split_a_line_too_long_for_one_part() -> None:
    parts = minutes.chunks(["短" * 1000, "b"], budget=300)
    assert all(minutes.estimate_tokens(p) <= 300 for p in parts)
    assert "".join(parts).replace("\n", "") == "短" * 1000 + "b"


def test_endpoint_down_is_retried_later_and_the_transcript_is_untouched(
        tmp_path: Path, chat_server: ChatServer, clock: ManualClock) -> None:
    _path, settings, queue, tid, out_dir = _setup(tmp_path, chat_server, clock)
    before = (out_dir / "周会.txt").read_bytes()
    chat_server.down = True
    m = Minutes(settings, queue, clock, "n1")
    assert m.run_once() is True
    row = queue.get(tid)
    assert row.status == "completed"  # the transcription's own outcome is not touched
    assert row.summary_status == "pending" and row.summary_attempts == 1
    assert "could not reach the LLM server" in row.summary_error and "summary.url" in \
        row.summary_error
    assert row.summary_next_at == clock.now() + timedelta(seconds=60)
    assert m.run_once() is False  # backing off: not due yet
    clock.advance(61)
    chat_server.down = False
    assert m.run_once() is True
    assert queue.get(tid).summary_status == "done"
    assert (out_dir / "周会.txt").read_bytes() == before
    assert (out_dir / "周会.minutes.md").is_file()


@pytest.mark.parametrize("mode, reason", [
    ("malformed", "no choices[0].message.content"),
    ("not_json", "not JSON"),
    ("empty", "the answer is empty"),
    ("error", "answered HTTP 500: {\"error\": {\"message\": \"model not loaded\"}}"),
])
def test_bad_replies_give_up_after_the_last_attempt_with_the_reason(
        tmp_path: Path, chat_server: ChatServer, clock: ManualClock, mode: str,
        reason: str) -> None:
    path, settings, queue, tid, out_dir = _setup(tmp_path, chat_server, clock)
    chat_server.mode = mode
    m = Minutes(settings, queue, clock, "n1")
    for wait in (60, 120):  # backoff doubles
        assert m.run_once() is True
        assert queue.get(tid).summary_status == "pending"
        assert queue.get(tid).summary_next_at == clock.now() + timedelta(seconds=wait)
        clock.advance(wait)
    assert m.run_once() is True
    row = queue.get(tid)
    assert row.summary_status == "failed" and reason in row.summary_error
    report = (out_dir / "周会.minutes.error.txt").read_text(encoding="utf-8")
    assert "could not write its minutes" in report and reason in report
    assert "The transcript is complete and unaffected" in report
    assert f"python app.py minutes {tid}" in report
    assert not (out_dir / "周会.minutes.md").exists()
    shown = status.render_text(status.collect(settings, queue, None), "en")
    assert "minutes: failed 1" in shown and f"#{tid} team/周会.mp3: minutes failed" in shown
    assert "会议纪要：失败 1" in status.render_text(status.collect(settings, queue, None),
                                                 "zh-CN")
    page = statuspage.render_page(status.collect(settings, queue, None), "zh-CN")
    assert "<h2>会议纪要</h2>" in page and "无法连接" not in page and reason[:20] in \
        page.replace("&quot;", '"')
    # fixed: `python app.py minutes ID` makes them again, and success removes the report
    chat_server.mode = "ok"
    result = app(path, "minutes", str(tid))
    assert result.returncode == 0, result.stderr
    assert m.run_once() is True
    assert queue.get(tid).summary_status == "done"
    assert not (out_dir / "周会.minutes.error.txt").exists()
    assert app(path, "minutes", "999").returncode == 1


def test_a_server_slower_than_the_timeout(tmp_path: Path, chat_server: ChatServer,
                                          clock: ManualClock) -> None:
    _path, settings, queue, tid, _out = _setup(tmp_path, chat_server, clock, timeout_seconds=0.5)
    chat_server.mode, chat_server.delay = "slow", 3.0
    Minutes(settings, queue, clock, "n1").run_once()
    row = queue.get(tid)
    assert row.summary_status == "pending"
    assert "did not answer within 0.5 s (summary.timeout_seconds)" in row.summary_error


def test_reasons_are_in_chinese_for_a_chinese_ui(tmp_path: Path, chat_server: ChatServer,
                                                 clock: ManualClock) -> None:
    _p, settings, queue, tid, out_dir = _setup(tmp_path, chat_server, clock, ui="zh-CN")
    chat_server.down = True
    m = Minutes(settings, queue, clock, "n1")
    m.run_once()
    assert "无法连接大模型服务" in queue.get(tid).summary_error
    (out_dir / "周会.txt").unlink()  # a transcript the user deleted meanwhile
    clock.advance(61)
    m.run_once()
    row = queue.get(tid)
    assert "找不到转写稿" in row.summary_error
    assert row.summary_status == "failed"  # at once: trying again cannot bring it back
    report = (out_dir / "周会.minutes.error.txt").read_text(encoding="utf-8")
    assert "未能生成会议纪要" in report and "转写稿完整，不受影响" in report


def test_a_claim_of_a_dead_node_lapses_and_stop_hands_work_back(
        tmp_path: Path, chat_server: ChatServer, clock: ManualClock) -> None:
    _path, settings, queue, tid, _out = _setup(tmp_path, chat_server, clock)
    dead = Minutes(settings, queue, clock, "dead-node")
    assert dead.claim() is not None  # then the node dies before it answers
    other = Minutes(settings, queue, clock, "n2")
    assert other.claim() is None  # still claimed
    clock.advance(settings.summary.timeout_seconds + 61)
    assert other.run_once() is True and queue.get(tid).summary_status == "done"
    # stop() while a request is in flight: the row goes back to pending, attempt not spent
    assert other.retry(tid)
    m = Minutes(settings, queue, clock, "n3")
    m._current = m.claim().id
    m.stop()
    row = queue.get(tid)
    assert (row.summary_status, row.summary_attempts) == ("pending", 0)


def test_minutes_off_leaves_the_task_alone(tmp_path: Path, clock: ManualClock) -> None:
    settings = load_settings(write_settings(tmp_path, {}))
    assert minutes.wanted(settings) == {}
