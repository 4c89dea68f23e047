"""The HTTP endpoint against a real running service: /health, /metrics, the /status page.

Real parts: the service (in-process `runner.Service`, and once as `python app.py` in a child
process), a real SQLite file, the real watchdog observer, real sockets on 127.0.0.1. The GPUs
are the simulated backend (there is none here). No Whisper model is needed: the files dropped in
are not audio, so the watcher fails them, and the other states are made with the queue's verbs.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import timedelta
from email.message import Message
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from service import db
from service.config import HttpSettings, load_settings
from service.runner import Service, heartbeat_path
from service.tasks import NewTask, TaskQueue
from service.web import WebServer
from tests.conftest import write_settings
from tests.speech import wait_for

REPO = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
EVIL = "<script>alert(1)<script>.mp3"  # '/' cannot be part of a file name
EVIL2 = "<img src=x onerror=alert(1)>.mp3"
SIM_GPUS = [24576, 16384]


def base_settings(folder: Path, **extra: dict) -> Path:
    data = {
        "models": {"default": "tiny.en", "allow_download": False},
        "watcher": {"stable_seconds": 0.3, "rescan_seconds": 2},
        "scheduler": {"interval_seconds": 0.3, "prestart_workers": 0},
        "gpu": {"simulate": SIM_GPUS},
        "http": {"port": 0},
    }
    for key, value in extra.items():
        data.setdefault(key, {}).update(value)
    return write_settings(folder, data)


def get(url: str, method: str = "GET") -> tuple[int, Message, bytes]:
    """(status, headers — looked up case-insensitively, as HTTP says —, body)."""
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def free(port: int) -> bool:
    """Nobody listens on the port (SO_REUSEADDR: closed connections in TIME_WAIT don't count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def seed(q: TaskQueue) -> dict[str, int]:
    """Tasks the dispatcher will leave alone: a pending one not due for a day, two running on
    another node (long leases), one completed, one cancelled."""
    ids = {}
    for i, state in enumerate(("pending", "loading", "processing", "completed", "cancelled")):
        new = NewTask(source=f"team/{state}.mp3", size=10 + i, mtime_ns=i, model="tiny.en",
                      audio_seconds=40.0)
        ids[state] = q.enqueue(new).id
    q.update_fields(ids["pending"], next_attempt_at=q.clock.now() + timedelta(days=1))
    w = "otherhost:77"
    for state in ("loading", "processing", "completed"):
        q.claim(ids[state], w, 3600, device="cpu")
    for state in ("processing", "completed"):
        q.start_processing(ids[state], w, load_seconds=2.5)
    q.set_progress(ids["processing"], w, 0.4)
    q.complete(ids["completed"], w, transcribe_seconds=8.0)  # real-time factor 0.2
    q.set_source_state(ids["completed"], "archived")
    q.cancel(ids["cancelled"])
    return ids


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory):
    """A real service, in this process, with tasks in every state."""
    folder = tmp_path_factory.mktemp("web")
    settings = load_settings(base_settings(folder))
    db.migrate(settings.database_url)
    q = TaskQueue(db.make_engine(settings.database_url))
    ids = seed(q)
    service = Service(settings)
    service.start()
    try:
        assert service.web is not None and service.web.port, "the endpoint did not start"
        service.backend.set_external(0, 3000)  # another program holds 3000 MiB on card 0
        settings.inbox.mkdir(parents=True, exist_ok=True)
        for name in ("x.mp3", EVIL, EVIL2):
            (settings.inbox / name).write_text("this is not audio", encoding="utf-8")
        wait_for(lambda: q.counts()["failed"] == 3, timeout=60)
        yield service, q, ids, f"http://127.0.0.1:{service.web.port}"
    finally:
        service.stop()
        q.engine.dispose()


# ---- /health ------------------------------------------------------------------------------------
def test_health_ok_then_degraded_when_the_watcher_stops(running) -> None:
    service, _, _, url = running
    code, headers, body = get(url + "/health")
    assert code == 200 and headers["Content-Type"].startswith("application/json")
    data = json.loads(body)
    assert data["status"] == "ok" and data["reasons"] == []
    assert data["checks"] == {"watcher": True, "scheduler": True, "database": True,
                              "gpu": f"{len(SIM_GPUS)} GPU(s)"}

    service.scheduler.pause_job("maintenance")  # it would restart the watcher within 5 s
    try:
        service.watcher.stop()
        code, _, body = get(url + "/health")
        data = json.loads(body)
        assert code == 503 and data["status"] == "degraded"
        assert data["checks"]["watcher"] is False
        assert [r for r in data["reasons"] if r.startswith("watcher")], data
        page = get(url + "/status")[2].decode()
        assert "Something needs attention" in page and "folder watcher is not running" in page
        metrics = get(url + "/metrics")[2].decode()
        assert "dropscribe_healthy 0.0" in metrics
    finally:
        service.scheduler.resume_job("maintenance")
    # the maintenance job restarts the watcher and health comes back by itself
    wait_for(lambda: get(url + "/health")[0] == 200, timeout=30)


# ---- /metrics -----------------------------------------------------------------------------------
def test_metrics_match_the_database(running) -> None:
    service, q, _, url = running
    code, headers, body = get(url + "/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}

    def samples(name: str) -> dict[tuple, float]:
        return {tuple(sorted(s.labels.items())): s.value for s in fams[name].samples
                if s.name == name or s.name == name + "_total"}

    counts = q.counts()
    depth = {dict(k)["state"]: v for k, v in samples("dropscribe_queue_tasks").items()}
    assert depth == {state: float(n) for state, n in counts.items()}
    assert depth["failed"] == 3 and depth["completed"] == 1 and depth["processing"] == 1
    assert fams["dropscribe_tasks_completed"].type == "counter"
    assert samples("dropscribe_tasks_completed") == {(): counts["completed"]}
    assert samples("dropscribe_tasks_failed") == {(): counts["failed"]}
    assert samples("dropscribe_tasks_cancelled") == {(): counts["cancelled"]}

    with q.engine.connect() as conn:
        stats = conn.execute(text(
            "SELECT model, device, avg_real_time_factor, avg_load_seconds FROM model_stats "
            "WHERE model = 'tiny.en' AND device = 'cpu'")).one()
    rtf = samples("dropscribe_real_time_factor")
    assert rtf[(("device", "cpu"), ("model", "tiny.en"))] == pytest.approx(stats[2])
    assert stats[2] == pytest.approx(0.2)
    load = samples("dropscribe_model_load_seconds_avg")
    assert load[(("device", "cpu"), ("model", "tiny.en"))] == pytest.approx(stats[3])

    snap = {str(g["index"]): g for g in service.dispatcher.vram.snapshot()}
    assert len(snap) == len(SIM_GPUS)
    for metric, key in (("budget", "budget_mb"), ("reserved", "reserved_mb"),
                        ("used", "used_mb"), ("total", "total_mb")):
        got = samples(f"dropscribe_gpu_vram_{metric}_bytes")
        assert {dict(k)["gpu"]: v for k, v in got.items()} == {
            i: g[key] * MIB for i, g in snap.items()}, metric
        assert {dict(k)["name"] for k in got} == {g["name"] for g in snap.values()}
    assert samples("dropscribe_gpu_vram_total_bytes")[
        (("gpu", "0"), ("name", snap["0"]["name"]))] == SIM_GPUS[0] * MIB
    assert samples("dropscribe_running_tasks") == {(): 0.0}  # the two running ones are remote
    assert samples("dropscribe_healthy") == {(): 1.0}


def test_metrics_use_a_registry_of_their_own(running) -> None:
    from prometheus_client import REGISTRY, generate_latest

    assert b"dropscribe_" not in generate_latest(REGISTRY)


# ---- the status page ----------------------------------------------------------------------------
def test_status_page_shows_everything_and_escapes_file_names(running) -> None:
    _, q, ids, url = running
    code, headers, body = get(url + "/status")
    assert code == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src" not in headers["Content-Security-Policy"]  # no scripts at all
    page = body.decode()
    assert '<meta http-equiv="refresh" content="5">' in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;script&gt;.mp3" in page
    assert "&lt;img src=x onerror=alert(1)&gt;.mp3" in page
    assert "http://" not in page.replace(url, "")  # no external assets
    assert "Service running" in page
    for state, n in q.counts().items():
        assert f'<div class="count s-{state}"><b>{n}</b><span>{state}</span></div>' in page
    assert f"#{ids['processing']} team/processing.mp3" in page and "width:40.0%" in page
    assert "GPU 0 · Simulated GPU" in page and f"used 3000 / {SIM_GPUS[0]} MiB" in page
    assert "x.mp3" in page and "not an audio or video file" in page

    zh = get(url + "/status?lang=zh-CN")[2].decode()
    assert '<html lang="zh-CN">' in zh
    for word in ("服务正在运行", "等待", "已完成", "失败", "正在转写", "最近的失败"):
        assert word in zh, word
    assert "&lt;script&gt;" in zh and "<script" not in zh


def test_routes_methods_and_errors(running, monkeypatch, caplog) -> None:
    service, _, _, url = running
    code, _, body = get(url + "/nope")
    assert code == 404 and body.strip() == b"Not found"
    code, headers, body = get(url + "/health", method="HEAD")
    assert code == 200 and body == b"" and int(headers["Content-Length"]) > 0
    code, headers, _ = get(url + "/health", method="POST")
    assert code == 405 and set(headers["Allow"].split(", ")) == {"GET", "HEAD"}

    def boom() -> dict:
        raise RuntimeError("page exploded")

    monkeypatch.setattr(service.web, "status_data", boom)
    with caplog.at_level(logging.ERROR, logger="service.web"):
        code, headers, body = get(url + "/status")
    assert code == 500 and headers["Content-Type"].startswith("text/plain")
    assert b"Internal error" in body and b"exploded" not in body  # no traceback to the client
    assert "page exploded" in caplog.text
    monkeypatch.undo()
    assert get(url + "/health")[0] == 200 and get(url + "/status")[0] == 200  # still serving


def test_bound_to_localhost_by_default(running) -> None:
    service, _, _, _ = running
    assert HttpSettings().host == "127.0.0.1"
    assert service.web.address == ("127.0.0.1", service.web.port)
    assert load_settings(write_settings(Path(service.settings.base_dir) / "d", {})).http.port \
        == 8765


def test_port_in_use_is_logged_and_the_service_keeps_running(tmp_path: Path, caplog) -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    settings = load_settings(base_settings(tmp_path, http={"port": port},
                                           gpu={"simulate": None, "devices": "none"}))
    service = Service(settings)
    try:
        with caplog.at_level(logging.ERROR, logger="service.web"):
            service.start()
        assert service.web is not None and service.web.port is None
        assert "http.port" in service.web.error and str(port) in service.web.error
        assert "http.port" in caplog.text and "keeps running" in caplog.text
        assert service.scheduler.running and service.watcher.alive()
        service._heartbeat()
        hb = json.loads(heartbeat_path(settings).read_text(encoding="utf-8"))
        assert hb["http_port"] is None
    finally:
        service.stop()
        blocker.close()


def test_web_server_stops_and_frees_its_port(tmp_path: Path) -> None:
    settings = load_settings(base_settings(tmp_path, gpu={"simulate": None, "devices": "none"}))
    db.migrate(settings.database_url)

    class Bare:  # a service that has not started anything: health must say so, not crash
        backend = None

    web = WebServer(settings, Bare())
    assert web.start() and web.port
    code, _, body = get(f"http://127.0.0.1:{web.port}/health")
    assert code == 503 and {r.split(":")[0] for r in json.loads(body)["reasons"]} == {
        "watcher", "scheduler"}
    assert get(f"http://127.0.0.1:{web.port}/status")[0] == 200
    web.stop()
    assert free(web.port)  # no listener left behind


# ---- the real `python app.py` ------------------------------------------------------------------
def test_service_process_reports_its_port_in_the_heartbeat(tmp_path: Path) -> None:
    path = base_settings(tmp_path, gpu={"simulate": None, "devices": "none"},
                         ui={"language": "zh-CN"})
    settings = load_settings(path)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
    log = open(tmp_path / "service.out", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--settings", str(path)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd="/")
    try:
        def port() -> int | None:
            try:
                hb = json.loads(heartbeat_path(settings).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
            return hb.get("http_port")

        p = wait_for(port, timeout=60, interval=0.3)
        code, _, body = get(f"http://127.0.0.1:{p}/health")
        assert code == 200 and json.loads(body)["status"] == "ok"
        (settings.inbox / EVIL).write_text("not audio", encoding="utf-8")
        q = TaskQueue(db.make_engine(settings.database_url))
        wait_for(lambda: q.counts()["failed"] == 1, timeout=60)
        q.engine.dispose()
        page = get(f"http://127.0.0.1:{p}/status")[2].decode()
        assert '<html lang="zh-CN">' in page and "服务正在运行" in page
        assert "&lt;script&gt;alert(1)&lt;script&gt;.mp3" in page and "<script" not in page
        out = subprocess.run(
            [sys.executable, str(REPO / "app.py"), "--settings", str(path), "status"],
            capture_output=True, text=True, encoding="utf-8", timeout=60, cwd="/")
        assert "服务正在运行" in out.stdout and f"状态页面：http://127.0.0.1:{p}/" in out.stdout
        assert "失败 1" in out.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        log.close()
    assert code == 0, (tmp_path / "service.out").read_text("utf-8", errors="replace")[-3000:]
    assert free(p), f"port {p} still taken after the service stopped"


@pytest.mark.slow
def test_many_concurrent_clients_while_tasks_run(tmp_path: Path, models_dir: Path) -> None:
    """Prometheus plus a few browser tabs: 8 clients at once on every route while real files are
    transcribed. The read-only engine once used SQLAlchemy's SingletonThreadPool, which closed
    connections other request threads still used: the service segfaulted with 2 clients."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.speech import speak_wav
    from tests.svc import ServiceProcess, service_settings

    svc = ServiceProcess(service_settings(tmp_path, models_dir))
    try:
        def port() -> int | None:
            if not svc.started():
                return None
            return json.loads(heartbeat_path(svc.settings).read_text("utf-8")).get("http_port")

        url = f"http://127.0.0.1:{wait_for(port, timeout=60)}"
        for i in range(3):
            speak_wav(f"Meeting number {i} starts at nine.", svc.settings.inbox / f"m{i}.wav")

        def client(n: int) -> list:
            codes = []
            for k in range(200):
                try:
                    codes.append(get(url + ("/", "/metrics", "/health")[(n + k) % 3])[0])
                except OSError as err:  # connection reset: the service died
                    codes.append(repr(err))
                    break
                if k >= 20 and all(t.status == "completed" for t in svc.tasks()) \
                        and len(svc.tasks()) == 3:
                    break
            return codes

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(client, range(8)))
        assert svc.proc.poll() is None, svc.output()[-3000:]
        codes = [c for r in results for c in r]
        assert len(codes) >= 8 * 20 and set(codes) == {200}, sorted(set(codes))
        def settled() -> list:
            rows = svc.tasks()
            return rows if len(rows) == 3 and all(
                t.status in ("completed", "failed") for t in rows) else []

        try:
            rows = wait_for(settled, timeout=300)
        except AssertionError:
            rows = [(t.source, t.status, t.error_message) for t in svc.tasks()]
            raise AssertionError(rows, svc.output()[-2000:]) from None
        assert [t.status for t in rows] == ["completed"] * 3, [
            (t.source, t.status, t.error_message) for t in rows]
    finally:
        code = svc.stop()
    assert code == 0, svc.output()[-3000:]


# ---- transcripts and audio through the page's API -----------------------------------------------
def test_transcripts_downloads_and_audio_only_from_their_folders(tmp_path: Path) -> None:
    from tests.web import Client, bare_server

    web = bare_server(tmp_path / "svc")
    try:
        cfg = web.settings
        outside = tmp_path / "secret.txt"
        outside.write_text("private", encoding="utf-8")
        out_dir = cfg.outbox / "团队"
        out_dir.mkdir(parents=True)
        doc = {"text": " Hello there.", "language": "en",
               "segments": [{"start": 0.0, "end": 1.5, "text": " Hello there."},
                            {"start": 1.5, "end": 2.0, "text": " Yes.", "speaker": "张经理"}]}
        (out_dir / "会议.json").write_text(json.dumps(doc), encoding="utf-8")
        (out_dir / "会议.srt").write_text("1\n00:00:00,000 --> 00:00:01,500\nHello\n", "utf-8")
        (cfg.outbox / "link.txt").symlink_to(outside)
        q = TaskQueue(db.make_engine(cfg.database_url))
        ok = q.enqueue(NewTask(source="团队/会议.wav", size=4000, mtime_ns=1, model="tiny.en"))
        bad = q.enqueue(NewTask(source="x.wav", size=1, mtime_ns=1, model="tiny.en"))
        for task, outs in ((ok, [out_dir / "会议.json", out_dir / "会议.srt"]),
                           (bad, [outside, cfg.outbox / "link.txt"])):
            q.claim(task.id, "w:1", 60, device="cpu")
            q.start_processing(task.id, "w:1", load_seconds=0)
            q.complete(task.id, "w:1", outputs=[str(p) for p in outs], transcribe_seconds=1)
        (cfg.archive / "团队").mkdir(parents=True)
        (cfg.archive / "团队" / "会议.wav").write_bytes(bytes(range(200)) * 20)
        q.set_source_state(ok.id, "archived")
        # a later recording of the same name, archived as " (2)": the player plays that one
        later = q.enqueue(NewTask(source="团队/会议.wav", size=300, mtime_ns=2, model="tiny.en"))
        q.claim(later.id, "w:1", 60, device="cpu")
        q.start_processing(later.id, "w:1", load_seconds=0)
        q.complete(later.id, "w:1", outputs=[], transcribe_seconds=1)
        (cfg.archive / "团队" / "会议 (2).wav").write_bytes(b"L" * 300)
        q.set_source_state(later.id, "archived", moved_to="团队/会议 (2).wav")
        q.engine.dispose()

        c = Client(f"http://127.0.0.1:{web.port}")
        c.session()
        code, data = c.json("GET", f"/api/tasks/{ok.id}/transcript")
        assert code == 200 and data["segments"] == [  # a speaker only where labelled
            {"start": 0.0, "end": 1.5, "text": " Hello there."},
            {"start": 1.5, "end": 2.0, "text": " Yes.", "speaker": "张经理"}]
        code, headers, body = c.request("GET", f"/api/tasks/{ok.id}/download/srt")
        assert code == 200 and body.startswith(b"1\n00:00:00,000")
        assert "attachment" in headers["content-disposition"]
        assert "%E4%BC%9A%E8%AE%AE.srt" in headers["content-disposition"]  # 会议.srt, UTF-8
        code, headers, body = c.request("GET", f"/api/tasks/{ok.id}/audio",
                                        headers={"Range": "bytes=100-199"})
        assert code == 206 and body == (bytes(range(200)) * 20)[100:200]  # the player can seek
        code, _, body = c.request("GET", f"/api/tasks/{later.id}/audio")
        assert code == 200 and body == b"L" * 300
        for path in (f"/api/tasks/{bad.id}/download/txt", f"/api/tasks/{bad.id}/transcript",
                     f"/api/tasks/{bad.id}/audio", f"/api/tasks/{ok.id}/download/vtt",
                     "/api/tasks/999/transcript"):
            code, _, body = c.request("GET", path)
            assert code == 404 and b"private" not in body, path
    finally:
        web.stop()
