"""The web page in a real headless Chromium (Debian's `chromium`, driven by Playwright through
`executable_path`; nothing is downloaded) against the real service (`python app.py`, real
tiny.en, real espeak-ng speech). One service and one browser for the whole module.

Screenshots go to docs/ (web-page.png, web-transcript.png, web-phone.png) to be checked by eye.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import socket
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from service.runner import heartbeat_path
from tests.speech import read_wav, speak_wav, wait_for, write_wav
from tests.svc import ServiceProcess, service_settings
from tests.web import Client

log = logging.getLogger(__name__)

pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parents[1] / "docs"
PASSWORD = "open sesame 2026"
# Separately spoken sentences with pauses: tiny.en transcribes these reliably (one long espeak
# run of similar sentences was sometimes skipped whole as "no speech").
SENTENCES = ["The team reviewed the budget for the new office.",
             "Everyone agreed to meet again next week.",
             "The schedule will be decided on Friday.",
             "Please send the minutes to the whole team."]


def meeting_wav(folder: Path, dest: Path, repeat: int) -> Path:
    parts, rate = [], 16000
    for i, sentence in enumerate(SENTENCES):
        samples, rate = read_wav(speak_wav(sentence, folder / f"sentence{i}.wav"))
        parts += [samples, np.zeros(int(0.6 * rate), np.float32)]
    return write_wav(dest, np.tile(np.concatenate(parts), repeat), rate)


# Every (file, state) the page ever shows, recorded in the page itself as it renders.
RECORDER = """() => {
  window.__seen = [];
  const note = () => {
    for (const li of document.querySelectorAll('li[data-id]')) {
      const pair = li.querySelector('.file').textContent + '|' + li.dataset.status;
      if (window.__seen[window.__seen.length - 1] !== pair && !window.__seen.includes(pair))
        window.__seen.push(pair);
    }
  };
  new MutationObserver(note).observe(document.body, {subtree: true, childList: true});
  note();
}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, models_dir: Path):
    """The service (password set, one file at a time) and a logged-out Chromium page."""
    from playwright.sync_api import sync_playwright

    folder = tmp_path_factory.mktemp("webpage")
    svc = ServiceProcess(service_settings(
        folder, models_dir, http={"password": PASSWORD}, watcher={"stable_seconds": 0.5},
        cpu={"max_concurrent_tasks": 1}))
    audio = folder / "audio"
    meeting_wav(folder, audio / "meeting.wav", repeat=2)  # about 28 s
    speak_wav("Meeting notes: the launch moves to Friday.", audio / "会议记录.wav")
    # the blocker: ten minutes of speech keep the single slot busy until the test cancels it,
    # so the other files wait (pending) for as long as the test needs, on any machine
    meeting_wav(folder, audio / "批次" / "取消我.wav", repeat=44)
    (audio / "broken.mp3").write_text("this is not audio", encoding="utf-8")

    def port() -> int | None:
        if not svc.started():
            return None
        return json.loads(heartbeat_path(svc.settings).read_text("utf-8")).get("http_port")

    url = f"http://127.0.0.1:{wait_for(port, timeout=120)}"
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (apt-get install chromium; see .ci/run)"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context(locale="zh-CN", timezone_id="Asia/Shanghai",
                                      viewport={"width": 1100, "height": 900},
                                      accept_downloads=True)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            yield svc, url, page, audio, errors, browser
        finally:
            context.close()
            browser.close()
            code = svc.stop()
            assert code == 0, svc.output()[-3000:]


def until(page, expression: str, timeout: float = 60) -> object:
    """Wait for a JS expression to be truthy (page.wait_for_function would eval a string,
    which the page's CSP rightly forbids; evaluate goes through DevTools)."""
    return wait_for(lambda: page.evaluate(expression), timeout=timeout)


def drop_files(page, paths: list[Path]) -> None:
    """Drag files onto the drop zone: a real `drop` event carrying a DataTransfer of Files."""
    files = [{"name": p.name, "b64": base64.b64encode(p.read_bytes()).decode()} for p in paths]
    transfer = page.evaluate_handle("""(files) => {
      const dt = new DataTransfer();
      for (const f of files) {
        const bin = atob(f.b64), bytes = new Uint8Array(bin.length);
        for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
        dt.items.add(new File([bytes], f.name, {type: "audio/wav"}));
      }
      return dt;
    }""", files)
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})


def task_of(svc: ServiceProcess, source: str):
    return next((t for t in svc.tasks() if t.source == source), None)


def row(page, source: str, where: str = ""):
    return page.locator(f"{where} li[data-id]").filter(has=page.locator(".file", has_text=source))


def test_log_in_upload_watch_open_download_cancel_retry(site) -> None:
    svc, url, page, audio, errors, _ = site
    page.goto(url + "/")
    page.wait_for_selector("#login-form", state="visible")
    assert page.locator("html").get_attribute("lang") == "zh-CN"  # the browser's language
    page.fill("#login-secret", "wrong password")
    page.click("#login-form button")
    until(page, "document.getElementById('login-error').textContent.length > 0")
    assert page.text_content("#login-error") == "密码或令牌错误。"
    page.fill("#login-secret", PASSWORD)
    page.click("#login-form button")
    page.wait_for_selector("#app", state="visible")
    page.evaluate(RECORDER)

    # the blocker first (a whole folder), then two files that must wait behind it
    page.set_input_files("#pick-folder", str(audio / "批次"))
    row(page, "web/批次/取消我.wav", "#running").wait_for(timeout=300_000)
    page.set_input_files("#pick-files", [str(audio / "meeting.wav")])
    page.click("#options summary")  # the per-upload choices
    # each model with the engine(s) it is installed for, and the default engine by name
    assert "tiny.en · openai-whisper" in page.text_content("#opt-model")
    assert page.text_content("#opt-engine-default") == "默认（openai-whisper）"
    page.select_option("#opt-language", "en")
    drop_files(page, [audio / "会议记录.wav"])  # dragged onto the page
    row(page, "web/meeting.wav", "#pending").wait_for(timeout=120_000)
    row(page, "web/会议记录.wav", "#pending").wait_for(timeout=120_000)
    summary = page.text_content("#summary")
    assert "个等待" in summary, summary
    page.screenshot(path=str(DOCS / "web-page.png"), full_page=True)
    row(page, "web/批次/取消我.wav", "#running").locator("button").click()  # 取消 while running
    row(page, "web/批次/取消我.wav", "#history").wait_for(timeout=120_000)
    assert row(page, "web/批次/取消我.wav", "#history").get_attribute("data-status") == \
        "cancelled"
    assert svc.queue.get(task_of(svc, "web/批次/取消我.wav").id).status == "cancelled"

    # a file that is not audio fails, with the reason in Chinese, and can be retried
    page.set_input_files("#pick-files", [str(audio / "broken.mp3")])
    failed = row(page, "web/broken.mp3", "#history")
    failed.wait_for(timeout=60_000)
    assert failed.get_attribute("data-status") == "failed"
    assert "不是可解码的音频或视频文件。" in failed.text_content()
    first = task_of(svc, "web/broken.mp3")
    assert (svc.settings.failed / "web" / "broken.mp3").is_file()
    failed.locator("button").click()  # 重试 (retry)
    wait_for(lambda: any(e.detail == "retry requested" for e in svc.queue.events(first.id)),
             timeout=60)
    wait_for(lambda: svc.queue.get(first.id).status == "failed"  # after the two waiting ones
             and svc.queue.get(first.id).source_state == "failed", timeout=900)

    for name in ("web/meeting.wav", "web/会议记录.wav"):
        wait_for(lambda n=name: row(page, n, "#history").count() == 1
                 and row(page, n, "#history").get_attribute("data-status") == "completed",
                 timeout=900)
    # what the page showed: the blocker running (for as long as it took us to cancel it), the
    # other two waiting and then finished. (Their own running phase may be shorter than the
    # page's 2-s refresh on a fast machine, so it is not required to have been on screen.)
    seen = page.evaluate("window.__seen")

    def shown(name: str) -> list[str]:
        return [s.split("|")[1] for s in seen if s.split("|")[0] == name]

    assert "processing" in shown("web/批次/取消我.wav") or "loading" in shown("web/批次/取消我.wav")
    assert shown("web/批次/取消我.wav")[-1] == "cancelled"
    for name in ("web/meeting.wav", "web/会议记录.wav"):
        states = shown(name)
        assert states[0] == "pending" and states[-1] == "completed", (name, states)
        assert set(states) <= {"pending", "loading", "processing", "completed"}, states
    chosen = json.loads((svc.settings.archive / "web" / "会议记录.wav.json").read_text("utf-8"))
    assert chosen == {"language": "en"}  # the page's choice became the file's sidecar

    # times in the browser's time zone (Asia/Shanghai, UTC+8)
    shanghai = datetime.now(timezone.utc) + timedelta(hours=8)
    footer = page.text_content("#updated")
    assert any(f"{(shanghai + timedelta(minutes=m)).hour}:" in footer for m in (-1, 0, 1)), \
        footer

    # the transcript: segments with times; a click plays the archived audio from there
    row(page, "web/meeting.wav", "#history").locator("button").click()
    page.wait_for_selector("#segments li")
    text = page.text_content("#segments").lower()
    assert "budget" in text and "office" in text and "friday" in text, text
    segments = page.locator("#segments li")
    assert segments.count() >= 3, page.text_content("#segments")
    third = segments.nth(2)
    start = float(third.get_attribute("data-start"))
    assert start > 0
    until(page, "document.getElementById('player').readyState >= 1")
    third.locator("button").click()
    until(page, f"document.getElementById('player').currentTime >= {start - 0.05}")
    page.screenshot(path=str(DOCS / "web-transcript.png"), full_page=False)

    with page.expect_download() as dl:
        page.click("#downloads a[data-format=srt]")
    got = Path(dl.value.path()).read_bytes()
    assert got == (svc.settings.outbox / "web" / "meeting.srt").read_bytes()
    assert b"-->" in got and dl.value.suggested_filename == "meeting.srt"
    assert errors == []


def test_a_folder_dragged_from_the_file_manager_keeps_its_subfolders(site) -> None:
    """A real drag of a folder (Chromium's own drag-and-drop, given real paths over DevTools):
    the page walks it with webkitGetAsEntry and every file lands under inbox/web/ with its
    subfolders, transcribed like any other."""
    svc, url, page, audio, errors, _ = site
    folder = audio / "季度会议"
    speak_wav("The first part of the meeting.", folder / "第一部分.wav")
    speak_wav("The second part of the meeting.", folder / "附件" / "第二部分.wav")
    page.goto(url + "/")
    if page.locator("#login-form").is_visible():
        page.fill("#login-secret", PASSWORD)
        page.click("#login-form button")
    page.wait_for_selector("#app", state="visible")
    box = page.locator("#drop").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    cdp = page.context.new_cdp_session(page)
    data = {"items": [], "files": [str(folder)], "dragOperationsMask": 1}
    for kind in ("dragEnter", "dragOver", "drop"):
        cdp.send("Input.dispatchDragEvent", {"type": kind, "x": x, "y": y, "data": data})
    names = ("web/季度会议/第一部分.wav", "web/季度会议/附件/第二部分.wav")
    for name in names:
        wait_for(lambda n=name: (t := task_of(svc, n)) is not None and t.status == "completed",
                 timeout=600)
        row(page, name, "#history").wait_for(timeout=60_000)
    assert (svc.settings.outbox / "web" / "季度会议" / "附件" / "第二部分.txt").is_file()
    assert errors == []


def test_english_on_a_phone(site) -> None:
    svc, url, page, _, errors, browser = site
    phone = browser.new_context(locale="en-US", viewport={"width": 390, "height": 844},
                                device_scale_factor=2, is_mobile=True, has_touch=True)
    try:
        p = phone.new_page()
        p.goto(url + "/")
        p.fill("#login-secret", PASSWORD)
        p.click("#login-form button")
        row(p, "web/meeting.wav", "#history").wait_for()
        assert p.text_content("#summary") == "Nothing waiting or running."
        assert "Not an audio or video file" in row(p, "web/broken.mp3", "#history").text_content()
        width = p.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width  # no sideways scrolling on a phone
        p.click("#lang-toggle")
        until(p, "document.documentElement.lang === 'zh-CN'")
        assert p.text_content("#summary") == "没有等待或正在转写的文件。"
        p.click("#lang-toggle")
        until(p, "document.documentElement.lang === 'en'")
        row(p, "web/broken.mp3", "#history").get_by_text("Retry").wait_for()  # re-rendered
        p.screenshot(path=str(DOCS / "web-phone.png"), full_page=True)
    finally:
        phone.close()
    assert errors == []


def test_many_slow_clients_while_a_file_is_transcribed(site) -> None:
    """40 clients that trickle their headers and 20 uploads that stall half-way hold their
    connections while a real file is transcribed: the page keeps answering, the file finishes,
    and the stalled uploads leave nothing in the inbox."""
    svc, url, _, audio, _, _ = site
    c = Client(url)
    assert c.login(PASSWORD)[0] == 200
    port = int(url.rsplit(":", 1)[1])
    slow: list[socket.socket] = []
    try:
        for i in range(40):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(f"GET /api/overview?n={i} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
            slow.append(s)
        for i in range(20):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(f"PUT /api/upload?name=stalled-{i}.wav HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Cookie: {c.cookie}\r\nX-CSRF-Token: {c.csrf}\r\n"
                      "Content-Length: 400000\r\n\r\n".encode() + b"\0" * 100_000)
            slow.append(s)
        wait_for(lambda: len(list(svc.settings.uploads.iterdir())) == 20, timeout=60)
        code, data = c.upload("again.wav", (audio / "会议记录.wav").read_bytes())
        assert code == 200, data
        latencies = []
        while (t := task_of(svc, "web/again.wav")) is None or t.status != "completed":
            for s in slow[:40]:
                s.sendall(b"X")  # one more byte of a header that never ends
            t0 = time.perf_counter()
            code, _, _ = c.request("GET", "/api/overview")
            latencies.append(time.perf_counter() - t0)
            assert code == 200
            time.sleep(0.2)
            assert len(latencies) < 1500, "the file did not finish"
        log.info("60 slow clients: %d page requests, median %.1f ms, max %.1f ms",
                 len(latencies), 1000 * sorted(latencies)[len(latencies) // 2],
                 1000 * max(latencies))
    finally:
        for s in slow:
            s.close()
    wait_for(lambda: not any(svc.settings.uploads.iterdir()), timeout=60)
    assert not list((svc.settings.inbox / "web").glob("stalled-*"))
    assert svc.proc.poll() is None
