"""Screenshot of the status page, as a phone would show it (a tool, not a test).

Starts a real service in this process (temporary folder, simulated GPUs, a free port), fills
the queue with tasks in every state, and points headless Chromium at http://127.0.0.1:PORT/status
(the no-JavaScript page; the full web page is shot by tests/test_web_page.py).

    apt-get install -y chromium fonts-noto-cjk        # once (the fonts for the Chinese page)
    python bench/screenshot_status.py                  # → docs/status-page.png
    python bench/screenshot_status.py --lang zh-CN --out /tmp/status-zh.png
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service import db  # noqa: E402
from service.calibration import Calibration  # noqa: E402
from service.clock import ManualClock  # noqa: E402
from service.config import load_settings  # noqa: E402
from service.runner import Service  # noqa: E402
from service.tasks import NewTask, TaskQueue  # noqa: E402

GPUS = [24576, 16384]
OTHER_NODE = "gpu-box-2:4711"


def chromium_command(exe: str, url: str, png: Path, profile: Path, width: int,
                     height: int) -> list[str]:
    return [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", f"--window-size={width},{height}",
        "--hide-scrollbars", f"--screenshot={png}", url,
    ]


def seed(settings, service: Service) -> None:  # noqa: ANN001
    """A believable queue: some waiting, three running, done, failed, cancelled."""
    start = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=20)
    clock = ManualClock(start)
    q = TaskQueue(db.make_engine(settings.database_url), clock)
    n = 0

    def add(source: str, model: str, seconds: float) -> int:
        nonlocal n
        n += 1
        new = NewTask(source=source, size=1000 + n, mtime_ns=n, model=model, audio_seconds=seconds)
        return q.enqueue(new).id

    done = [("team/standup 03-02.mp3", "turbo", 900, 0.08), ("interviews/alice.m4a", "turbo",
            2400, 0.07), ("会议/周会 记录.mp3", "large-v3", 1800, 0.16)]
    for source, model, secs, rtf in done:
        tid = add(source, model, secs)
        q.claim(tid, OTHER_NODE, 3600, device="cuda:0")
        clock.advance(4)
        q.start_processing(tid, OTHER_NODE, load_seconds=4.0)
        clock.advance(secs * rtf)
        q.complete(tid, OTHER_NODE, transcribe_seconds=secs * rtf, vram_peak_mb=5600)
        q.set_source_state(tid, "archived")
    clock.advance(300)
    running = [("large-v3/board meeting.wav", "large-v3", "cuda:0", 0.62, 10500),
               ("team/retro.mp3", "turbo", "cuda:1", 0.18, 6200),
               ("podcasts/episode 12.flac", "turbo", "cuda:0", None, 6200)]
    for source, model, device, progress, mb in running:
        tid = add(source, model, 3600)
        q.claim(tid, OTHER_NODE, 3600, device=device)
        clock.advance(20)
        if progress is not None:
            q.start_processing(tid, OTHER_NODE, load_seconds=6.0)
            q.set_progress(tid, OTHER_NODE, progress)
        service.dispatcher.vram.reserve(tid, int(device[-1]), mb)
        service.dispatcher.vram.materialise(tid)
    for source in ("inbox-notes/voice memo 1.m4a", "inbox-notes/voice memo 2.m4a", "lecture.mp4"):
        tid = add(source, "turbo", 600)
        q.update_fields(tid, next_attempt_at=start + timedelta(days=1))
    q.enqueue(NewTask(source="<script>alert(1)<script>.mp3", size=5, mtime_ns=99, model="turbo"),
              failed=("not_audio", "This is not an audio or video file (DropScribe cannot read "
                      "its contents)."))
    tid = add("old/duplicate.mp3", "turbo", 60)
    q.cancel(tid)
    cal = Calibration(q.engine, clock)
    for peak in (9800, 10150, 9950):
        cal.record("Simulated GPU 24 GB", "large-v3", "fp16", peak_mb=peak, rtf=0.16)
    for peak in (5600, 5710):
        cal.record("Simulated GPU 24 GB", "turbo", "fp16", peak_mb=peak, rtf=0.08)
    service.calibration.reload()
    service.backend.set_external(1, 4096)  # an LLM server shares card 1
    q.engine.dispose()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "status-page.png")
    ap.add_argument("--lang", choices=["en", "zh-CN"], default="en")
    ap.add_argument("--width", type=int, default=420)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--chromium", default=None, help="browser executable (default: search PATH)")
    args = ap.parse_args()
    exe = args.chromium or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
        None)
    if exe is None:
        print("error: no chromium found; install it with: apt-get install -y chromium",
              file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="dropscribe-shot-") as tmp:
        folder = Path(tmp)
        (folder / "settings.yaml").write_text(
            "models: {default: turbo, allow_download: false}\n"
            "scheduler: {prestart_workers: 0}\n"
            f"gpu: {{simulate: {GPUS}}}\n"
            f"ui: {{language: {args.lang}}}\n"
            "http: {port: 0}\n", encoding="utf-8")
        settings = load_settings(folder / "settings.yaml")
        service = Service(settings)
        service.start()
        try:
            if service.web is None or not service.web.port:
                print("error: the HTTP endpoint did not start", file=sys.stderr)
                return 1
            service.scheduler.pause_job("dispatch")  # nothing here is for this node to run
            seed(settings, service)
            url = f"http://127.0.0.1:{service.web.port}/status"
            args.out.parent.mkdir(parents=True, exist_ok=True)
            cmd = chromium_command(exe, url, args.out.resolve(), folder / "profile",
                                   args.width, args.height)
            print(" ".join(cmd))
            t0 = time.monotonic()
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if done.returncode != 0 or not args.out.is_file():
                print(done.stderr[-2000:], file=sys.stderr)
                return 1
            print(f"saved {args.out} ({args.out.stat().st_size} bytes) in "
                  f"{time.monotonic() - t0:.1f} s")
        finally:
            service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
