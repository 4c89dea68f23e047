"""status.collect / render_text and the i18n catalog, and `python app.py status` in English and
Chinese against a real SQLite file with tasks in every state."""

from __future__ import annotations

import json
import string
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from service import db, i18n, status, statuspage
from service.clock import ManualClock
from service.config import load_settings
from service.tasks import NewTask, TaskQueue
from tests.conftest import write_settings

REPO = Path(__file__).resolve().parents[1]
STATES = ("pending", "loading", "processing", "completed", "failed", "cancelled")
OLD_KEYS = {"service", "mode", "counts", "gpus", "running", "vram_estimates", "recent_failures"}


def fields(msg: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(msg) if name}


def app(settings: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "app.py"), "--settings", str(settings), *args],
        capture_output=True, text=True, encoding="utf-8", timeout=120, cwd="/",
    )


def one_of_each(q: TaskQueue, clock: ManualClock | None = None) -> dict[str, int]:
    """A task in every state, made with the queue's own verbs; {state: task id}."""
    ids = {}
    for i, state in enumerate(STATES):
        new = NewTask(source=f"dir/{state} 会议.mp3", size=100 + i, mtime_ns=i, model="tiny.en",
                      audio_seconds=60.0)
        ids[state] = q.enqueue(new).id
    w = "otherhost:1"
    for state in ("loading", "processing", "completed", "failed"):
        assert q.claim(ids[state], w, 3600, device="cpu") is not None
    for state in ("processing", "completed"):
        assert q.start_processing(ids[state], w, load_seconds=1.5) is not None
    if clock is not None:
        clock.advance(30)
    q.set_progress(ids["processing"], w, 0.25)
    assert q.complete(ids["completed"], w, transcribe_seconds=12.0) is not None
    assert q.fail(ids["failed"], w, "error", "decoder said <no>", retryable=False,
                  backoff_seconds=0) is not None
    assert q.cancel(ids["cancelled"]) is not None
    return ids


@pytest.fixture
def site(tmp_path: Path):
    def make(**extra: dict) -> tuple[Path, TaskQueue]:
        folder = tmp_path / f"site{len(list(tmp_path.iterdir()))}"
        path = write_settings(folder, {"models": {"default": "tiny.en"}, **extra})
        s = load_settings(path)
        db.migrate(s.database_url)
        q = TaskQueue(db.make_engine(s.database_url))
        made.append(q)
        return path, q

    made: list[TaskQueue] = []
    yield make
    for q in made:
        q.engine.dispose()


# ---- collect / render_text (in-process, simulated clock) ------------------------------------
def test_collect_counts_every_state_and_estimates_time_left(settings, queue, clock) -> None:
    ids = one_of_each(queue, clock)
    clock.advance(0)
    data = status.collect(settings, queue, None)
    assert OLD_KEYS <= set(data)
    assert data["service"] == "not running" and data["mode"] is None and data["gpus"] == []
    assert data["counts"] == {state: 1 for state in STATES}
    running = {r["status"]: r for r in data["running"]}
    assert set(running) == {"loading", "processing"}
    proc = running["processing"]
    assert proc["id"] == ids["processing"] and proc["progress"] == 0.25
    assert proc["elapsed_seconds"] == 30.0
    assert proc["eta_seconds"] == 90.0  # 30 s for 25 % → 120 s in all → 90 s left
    assert running["loading"]["eta_seconds"] is None  # no progress yet, no guess
    [failure] = data["recent_failures"]
    assert failure["id"] == ids["failed"] and failure["error"] == "decoder said <no>"
    json.dumps(data)  # plain data, ready for --json


def test_render_text_english_and_chinese(settings, queue, clock) -> None:
    one_of_each(queue, clock)
    heartbeat = {
        "pid": 4321, "mode": "simulated-gpu", "http_port": 8765,
        "gpus": [{"index": 0, "name": "Sim 24G", "total_mb": 24576, "budget_mb": 21094,
                  "reserved_mb": 1200, "used_mb": 1500, "tasks": 1}],
    }
    data = status.collect(settings, queue, heartbeat)
    assert data["service"] == "running" and data["status_url"] == "http://127.0.0.1:8765/"
    en = status.render_text(data, "en")
    assert "DropScribe: service running (simulated GPU, pid 4321)" in en
    assert "tasks: pending 1, loading 1, processing 1, completed 1, failed 1, cancelled 1" in en
    assert "GPU 0 Sim 24G: budget 21094 MiB, ours 1200 MiB, used 1500/24576 MiB, 1 task(s)" in en
    assert "processing 25% tiny.en on cpu: dir/processing 会议.mp3" in en
    assert "about 1 min 30 s left" in en
    assert "recent failures:" in en and "decoder said <no>" in en
    assert "status page: http://127.0.0.1:8765/" in en
    zh = status.render_text(data, "zh-CN")
    assert "DropScribe：服务正在运行（模拟 GPU，进程 4321）" in zh
    assert "任务：等待 1，加载中 1，处理中 1，已完成 1，失败 1，已取消 1" in zh
    assert "预算 21094 MiB" in zh and "约剩 1 分 30 秒" in zh and "最近的失败：" in zh
    assert "状态页面：http://127.0.0.1:8765/" in zh
    assert not any(word in zh for word in ("pending", "completed", "recent failures"))
    # the reason in Chinese; a detail nobody foresaw keeps its own words, labelled
    assert "意外错误。（详细信息：decoder said <no>）" in zh
    page = statuspage.render_page(data, "zh-CN")
    assert "意外错误。（详细信息：decoder said &lt;no&gt;）" in page
    assert "意外错误" not in statuspage.render_page(data, "en")


def test_catalog_is_complete_and_falls_back() -> None:
    en, zh = i18n.MESSAGES["en"], i18n.MESSAGES["zh-CN"]
    assert set(en) == set(zh), set(en) ^ set(zh)
    for key, msg in en.items():  # the same placeholders in both languages
        assert fields(msg) == fields(zh[key]), key
    assert i18n.t("task.state_log", "zh-CN", id=3, state=i18n.state_name("failed", "zh-CN"),
                  file="a.mp3") == "任务 3 失败：a.mp3"
    assert i18n.t("task.state_log", "en", id=3, state="failed", file="a.mp3") == \
        "task 3 failed: a.mp3"
    assert i18n.normalize("zh_CN.UTF-8") == "zh-CN" and i18n.normalize(None) == "en"
    assert i18n.t("no.such.key", "zh-CN") == "no.such.key"
    assert i18n.state_name("weird", "zh-CN") == "weird"
    assert i18n.duration(5, "en") == "5 s" and i18n.duration(3725, "zh-CN") == "1 小时 2 分"


# ---- the real command line ----------------------------------------------------------------------
def test_status_json_has_every_state_and_the_old_keys(site) -> None:
    path, q = site()
    ids = one_of_each(q)
    out = app(path, "status", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert OLD_KEYS <= set(data)
    assert data["service"] == "not running"
    assert data["counts"] == {state: 1 for state in STATES}
    assert sorted(r["status"] for r in data["running"]) == ["loading", "processing"]
    assert {r["id"] for r in data["running"]} == {ids["loading"], ids["processing"]}
    assert all("eta_seconds" in r and "elapsed_seconds" in r for r in data["running"])
    assert [f["id"] for f in data["recent_failures"]] == [ids["failed"]]
    assert "会议" in out.stdout  # UTF-8 as is, not \\u escapes


def test_status_text_in_english_and_in_chinese(site) -> None:
    en_path, en_q = site(ui={"language": "en"})
    one_of_each(en_q)
    en = app(en_path, "status")
    assert en.returncode == 0, en.stderr
    assert "service not running" in en.stdout and "completed 1" in en.stdout
    assert "recent failures:" in en.stdout

    zh_path, zh_q = site(ui={"language": "zh-CN"})
    one_of_each(zh_q)
    zh = app(zh_path, "status")
    assert zh.returncode == 0, zh.stderr
    for word in ("服务未运行", "等待 1", "加载中 1", "处理中 1", "已完成 1", "失败 1", "已取消 1",
                 "最近的失败"):
        assert word in zh.stdout, (word, zh.stdout)
    # --json stays machine-readable whatever the ui language: state names are not translated
    data = json.loads(app(zh_path, "status", "--json").stdout)
    assert data["counts"]["completed"] == 1 and data["service"] == "not running"


def test_eta_is_none_until_progress(settings, queue: TaskQueue, clock: ManualClock) -> None:
    new = NewTask(source="a.mp3", size=1, mtime_ns=1, model="tiny.en")
    tid = queue.enqueue(new).id
    queue.claim(tid, "h:1", 60, device="cpu")
    queue.start_processing(tid, "h:1", 1.0)
    clock.advance(10)
    [r] = status.collect(settings, queue, None)["running"]
    assert r["eta_seconds"] is None and r["elapsed_seconds"] == 10.0
    queue.set_progress(tid, "h:1", 1.0)
    [r] = status.collect(settings, queue, None)["running"]
    assert r["eta_seconds"] == 0.0
    assert clock.now() - timedelta(seconds=10) == queue.get(tid).claimed_at
