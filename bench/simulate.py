"""Replay a transcription workload on simulated GPUs through the REAL scheduling code.

    python bench/simulate.py                                   # 500 files dropped at once
    python bench/simulate.py --arrival poisson                 # files trickle in over time
    python bench/simulate.py --external 8192,0                 # an LLM server holds 8 GB on GPU 0
    python bench/simulate.py --external "0@0,0;600@8192,0"     # ... that starts at t = 600 s

It is a benchmark, not a test: it prints figures and asserts nothing about timings.

What is real
------------
Everything that decides: ``TaskQueue`` on a temporary SQLite file (enqueue, ready, claim,
start_processing, complete, fail: the same compare-and-set transactions the service runs),
``Planner`` (priority, fit, EASY backfilling), ``VramPool`` (budgets, admission, placement,
reservations), ``SimulatedBackend`` (each card's "used" memory as NVML would report it: other
programs' load plus what our running tasks really hold) and ``Calibration`` (estimates from
measured peaks and speeds), all under a ``ManualClock``. The loop below mirrors
``Dispatcher.tick``: at each tick it collects worker messages ("loaded" → materialise +
start_processing, "done" → complete + calibration.record + release, out-of-memory →
calibration.out_of_memory + fail(resource=True) + release), then asks the policy for tasks until
it says None, claiming each one and reserving its estimate. Ticks are 1 s of simulated time,
like the service's; nothing ever sleeps in real time.

What is simulated (ground truth the scheduler never sees)
---------------------------------------------------------
- True VRAM peak of a task: a per-model fp16 figure (model loaded on the CPU, cast to fp16, moved
  to the GPU, plus the CUDA context: TRUE_PEAK_MB) × N(1, 0.03). The scheduler starts from
  openai-whisper's README table × confidence factor 1.2 and learns from these peaks.
- True speed: seconds of GPU work per second of audio at full speed (TRUE_RTF, for a datacenter
  card; cards under 40 GB are SLOW_CARD_FACTOR slower) × a per-file factor N(1, 0.1) (content),
  plus a model load time (TRUE_LOAD_S). A task alone on a card needs load + audio × rtf seconds.
- GPU contention model: a card running n of our tasks (loading or transcribing) runs EACH at speed
  min(1, C / n), C = ``--saturation`` (default 3). Stock openai-whisper is Python-bound while
  decoding and leaves the GPU partly idle, so up to C tasks overlap for free; beyond C they
  time-slice and the card's throughput stays at C full-speed task-seconds per second. The
  external load takes memory, not compute. Memory held does not change speed.
- What the worker reports: transcribe_seconds is wall time, contention included (as the real
  worker measures it), so the calibrated real-time factor is the contended one.
- Out of memory: when a task starts, if the TRUE peaks of the tasks on that card (itself
  included) + the external load exceed the card's total, that task fails with a resource error
  (reported at the next tick). When the external load grows past what is free, the newest task
  on that card fails the same way.

Policies, each over the same trace
----------------------------------
ours:   Planner.next (priority, fit, EASY backfilling) with calibrated estimates — the service.
fifo:   strict priority/age order without backfilling: VramPool.place on the head only; if the
        head does not fit, nothing starts.
serial: one task in total at a time, on the biggest card.

The last line is machine-readable (figures of policy "ours"):

    RESULT makespan_vs_lower_bound=<x> speedup_vs_serial=<y> oom=<n> max_wait_s=<w>
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from service import db  # noqa: E402
from service.calibration import Calibration  # noqa: E402
from service.clock import ManualClock  # noqa: E402
from service.config import GpuSettings, SchedulerSettings  # noqa: E402
from service.gpu import SimulatedBackend  # noqa: E402
from service.planner import Active, Decision, Planner  # noqa: E402
from service.tables import COMPLETED, FAILED, Task  # noqa: E402
from service.tasks import NewTask, TaskQueue  # noqa: E402
from service.vram import VramPool  # noqa: E402

log = logging.getLogger("bench.simulate")

WORKER = "sim:1"
POLICIES = ("ours", "fifo", "serial")

# The issue's targets for policy "ours".
TARGET_VS_LOWER_BOUND = 1.15
TARGET_SPEEDUP_VS_SERIAL = 1.5

# Share of files per model.
MODEL_WEIGHTS = {"tiny": 0.15, "base": 0.15, "small": 0.25, "medium": 0.20, "turbo": 0.15,
                 "large-v3": 0.10}
# True fp16 VRAM peak in MiB (weights at ~2 bytes/parameter + activations + CUDA context).
TRUE_PEAK_MB = {"tiny": 512, "base": 717, "small": 1434, "medium": 2867, "turbo": 2048,
                "large-v3": 3686}
# True seconds of work per second of audio, alone on a datacenter card (A100/H100 class), fp16.
TRUE_RTF = {"tiny": 0.015, "base": 0.02, "small": 0.035, "medium": 0.06, "turbo": 0.03,
            "large-v3": 0.09}
SLOW_CARD_FACTOR = 1.35  # cards under 40 GB (workstation class) are this much slower
TRUE_LOAD_S = {"tiny": 1.0, "base": 1.2, "small": 2.0, "medium": 4.0, "turbo": 3.5,
               "large-v3": 7.0}
PEAK_SIGMA = 0.03
SPEED_SIGMA = 0.10
AUDIO_MIN_S, AUDIO_MAX_S = 30.0, 7200.0
AUDIO_MEDIAN_S, AUDIO_SIGMA = 600.0, 1.0  # log-normal: median 10 min
EPS = 1e-9


# ---- the workload ------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileSpec:
    n: int
    source: str
    model: str
    audio_s: float
    priority: int
    arrival_s: float
    peak_mb: float  # true VRAM peak
    speed: float  # true per-file factor on the real-time factor (content, language)

    def load_s(self) -> float:
        return TRUE_LOAD_S[self.model]

    def transcribe_s(self, total_mb: int) -> float:
        """Seconds of transcription alone (full speed) on a card of this size."""
        return self.audio_s * true_rtf(self.model, total_mb) * self.speed

    def alone_s(self, total_mb: int) -> float:
        return self.load_s() + self.transcribe_s(total_mb)


def true_rtf(model: str, total_mb: int) -> float:
    return TRUE_RTF[model] * (SLOW_CARD_FACTOR if total_mb < 40 * 1024 else 1.0)


def make_trace(args: argparse.Namespace) -> list[FileSpec]:
    rng = random.Random(args.seed)
    models, weights = zip(*MODEL_WEIGHTS.items(), strict=True)
    drafts = []
    for _ in range(args.files):
        model = rng.choices(models, weights)[0]
        audio = math.exp(rng.gauss(math.log(AUDIO_MEDIAN_S), AUDIO_SIGMA))
        audio = round(min(AUDIO_MAX_S, max(AUDIO_MIN_S, audio)), 1)
        priority = 1 if rng.random() < args.priority_share else 0
        peak = TRUE_PEAK_MB[model] * max(0.5, rng.gauss(1.0, PEAK_SIGMA))
        speed = max(0.5, rng.gauss(1.0, SPEED_SIGMA))
        drafts.append((model, audio, priority, peak, speed))
    # Arrival times.
    if args.arrival == "burst":
        # --bursts drops of equal size (folder copies), --burst-gap s apart; 1 = all at once.
        arrivals = [float((n * args.bursts // args.files) * args.burst_gap)
                    for n in range(args.files)]
    else:
        # Poisson: the offered load is --load × the cards' compute capacity (C × cards).
        fastest = max(args.gpus)
        mean_work = sum(TRUE_LOAD_S[m] + a * true_rtf(m, fastest) * s
                        for m, a, _, _, s in drafts) / len(drafts)
        rate = args.load * args.saturation * len(args.gpus) / mean_work  # files per second
        t, arrivals = 0.0, []
        for _ in range(args.files):
            arrivals.append(round(t, 3))
            t += rng.expovariate(rate)
    return [
        FileSpec(n, f"in/{n:04d}_{model}.wav", model, audio, priority, arrival, peak, speed)
        for n, ((model, audio, priority, peak, speed), arrival)
        in enumerate(zip(drafts, arrivals, strict=True))
    ]


def parse_external(text: str, cards: int) -> list[tuple[float, list[int]]]:
    """'8192,0' (from t = 0) or '0@0,0;600@8192,0;1800@0,0' (time@MiB per card; ...)."""
    out: list[tuple[float, list[int]]] = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        at, _, values = part.rpartition("@")
        mbs = [int(v) for v in values.split(",")]
        if len(mbs) != cards:
            raise argparse.ArgumentTypeError(f"--external needs {cards} values per step: {part}")
        out.append((float(at or 0), mbs))
    return sorted(out, key=lambda s: s[0]) or [(0.0, [0] * cards)]


# ---- lower bound -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LowerBound:
    longest_alone: float
    memory: float
    compute: float
    compute_per_card: float
    last_arrival: float
    release: float

    @property
    def issue(self) -> float:
        """The issue's four terms (its compute term treats all cards as the fastest one)."""
        return max(self.longest_alone, self.memory, self.compute, self.last_arrival)

    @property
    def value(self) -> float:
        """Every term below is a valid lower bound, so their maximum is too."""
        return max(self.issue, self.compute_per_card, self.release)


def card_weighted_bound(work: Sequence[Sequence[float]], c: float) -> float:
    """Compute floor for cards of different speeds (work[i][g]: task i alone on card g).

    The fractional relaxation (tasks may be split across cards, each card does at most C
    full-speed task-seconds per second) has, by LP duality, the bound
    max over card weights mu >= 0 with sum(mu) = 1 of sum_i min_g mu_g * work[i][g] / C.
    ANY such mu gives a valid lower bound; a few exponentiated-gradient steps find a good one.
    """
    cards = len(work[0])
    mu = [1.0 / cards] * cards
    best = 0.0
    for step in range(400):
        value, load = 0.0, [0.0] * cards
        for w in work:
            g = min(range(cards), key=lambda j: mu[j] * w[j])
            value += mu[g] * w[g]
            load[g] += w[g]
        best = max(best, value / c)
        top = max(load) or 1.0
        eta = 0.5 / math.sqrt(step + 1)
        mu = [m * math.exp(eta * x / top) for m, x in zip(mu, load, strict=True)]
        mu = [m / sum(mu) for m in mu]
    return best


def lower_bound(
    trace: Sequence[FileSpec], sizes: Sequence[int], usable_mb: Sequence[float], c: float
) -> LowerBound:
    # Every task at its best: alone (full speed) on the fastest card its true peak fits on.
    work = [[f.alone_s(t) if f.peak_mb <= u else math.inf
             for t, u in zip(sizes, usable_mb, strict=True)] for f in trace]
    alone = [min(w) for w in work]
    # (1) A task runs on one card and never faster than full speed: the makespan is at least the
    #     longest task's runtime alone.
    longest = max(alone)
    # (2) Each task holds at least its true peak for at least its alone runtime; the cards offer
    #     at most their usable memory (what the admission rules can ever give our tasks:
    #     total × max_utilization − max(reserved_mb, least external load)) every second.
    memory = sum(f.peak_mb * a for f, a in zip(trace, alone, strict=True)) / sum(usable_mb)
    # (3) A card delivers at most C full-speed task-seconds per second (contention model), so
    #     all the work divided by C × cards is a floor. As the issue states it, every task counts
    #     at its fastest card's speed, as if every card were that fast...
    compute = sum(alone) / (c * len(sizes))
    # (3b) ...which is loose when cards differ in speed (a 24 GB workstation card does less per
    #     second than an 80 GB datacenter one); the same floor with per-card speeds, via the
    #     fractional assignment's LP dual (see card_weighted_bound).
    compute_per_card = card_weighted_bound(work, c)
    # (4) The last file cannot finish before it arrives plus its own runtime.
    last = max(range(len(trace)), key=lambda i: (trace[i].arrival_s, alone[i]))
    last_arrival = trace[last].arrival_s + alone[last]
    # (5) The same for every file (generalises (1) and (4); equal to them for a single burst).
    release = max(f.arrival_s + a for f, a in zip(trace, alone, strict=True))
    return LowerBound(longest, memory, compute, compute_per_card, last_arrival, release)


# ---- the simulation ----------------------------------------------------------------------------
@dataclass
class Run:
    """One of our tasks on a fake card, from claim until the dispatcher collects it."""

    spec: FileSpec
    task_id: int
    gpu: int
    estimate_mb: int
    expected_end: object  # datetime: claim time + Planner.runtime_s (what the dispatcher stores)
    started_s: float
    phase: str = "loading"  # loading → transcribing → finished; or oom
    remaining: float = 0.0  # full-speed seconds of work left in this phase
    phase_started_s: float = 0.0


@dataclass
class GpuStats:
    peak_reserved_mb: int = 0
    peak_true_mb: float = 0.0
    peak_tasks: int = 0
    busy_integral: float = 0.0  # ∫ min(n, C) / C dt: share of the card's throughput in use
    busy_tasks: int = 0  # tasks started here


@dataclass
class Outcome:
    policy: str
    makespan: float
    completed: int
    failed: int
    unfinished: int
    oom: int
    waits: dict[int, float]
    priority_waits: list[float]
    gpus: list[GpuStats]
    budgets: list[int]
    totals: list[int]
    names: list[str]
    last_claim: float
    last_finisher: str
    real_s: float
    calibration: list[dict] = field(default_factory=list)

    @property
    def mean_wait(self) -> float:
        return sum(self.waits.values()) / len(self.waits) if self.waits else 0.0

    @property
    def max_wait(self) -> float:
        return max(self.waits.values(), default=0.0)


class Simulation:
    def __init__(
        self, policy: str, trace: Sequence[FileSpec], args: argparse.Namespace, workdir: Path
    ) -> None:
        self.policy = policy
        self.trace = list(trace)
        self.c = float(args.saturation)
        self.clock = ManualClock()
        self.t0 = self.clock.now()
        self.t = 0.0
        url = f"sqlite:///{(workdir / f'{policy}.db').as_posix()}"
        db.migrate(url)
        self.engine = db.make_engine(url)
        self.queue = TaskQueue(self.engine, self.clock)
        self.sched = SchedulerSettings()
        self.settings = GpuSettings(max_tasks_per_gpu=args.max_tasks_per_gpu,
                                    reserved_mb=args.reserved_mb)
        s = self.settings
        self.calibration = Calibration(self.engine, self.clock,
                                       confidence_factor=s.confidence_factor,
                                       k=s.calibration_k, window=s.calibration_samples)
        self.backend = SimulatedBackend(args.gpus)
        self.pool = VramPool(self.backend, s, self.calibration.estimate_mb)
        self.planner = Planner(self.pool, self.clock, self.calibration.rtf)
        devices = self.backend.devices()
        self.names = [g.name for g in devices]
        self.totals = [g.total_mb for g in devices]
        self.biggest = max(range(len(devices)), key=lambda i: self.totals[i])
        self.external_steps = list(args.external)
        self.external = [0] * len(devices)
        self.arrivals = sorted(self.trace, key=lambda f: (f.arrival_s, f.n))
        self.next_arrival = 0
        self.spec_by_id: dict[int, FileSpec] = {}
        self.runs: dict[int, Run] = {}
        self.mailbox: list[tuple[str, Run, float]] = []
        self.retry_at: list[float] = []
        self.dirty = False
        self.settled = 0
        self.oom = 0
        self.arrived: dict[int, float] = {}
        self.first_claim: dict[int, float] = {}
        self.finished: dict[int, float] = {}
        self.last_claim = 0.0
        self.last_finisher = ""
        self.stats = [GpuStats() for _ in devices]

    # ---- time ----------------------------------------------------------------------------
    def _speed(self, gpu: int) -> float:
        n = sum(1 for r in self.runs.values()
                if r.gpu == gpu and r.phase in ("loading", "transcribing"))
        return min(1.0, self.c / n) if n else 1.0

    def _advance(self, t_new: float) -> None:
        """Run the fake cards from self.t to t_new under the contention model."""
        dt = t_new - self.t
        if dt > 0:
            for gpu in range(len(self.totals)):
                computing = [r for r in self.runs.values()
                             if r.gpu == gpu and r.phase in ("loading", "transcribing")]
                if not computing:
                    continue
                speed = min(1.0, self.c / len(computing))
                for r in computing:
                    r.remaining -= dt * speed
                self.stats[gpu].busy_integral += dt * min(len(computing), self.c) / self.c
            self.t = t_new
        target = self.t0 + timedelta(seconds=t_new)
        delta = (target - self.clock.now()).total_seconds()
        if delta > 0:
            self.clock.advance(delta)

    def _next_event(self) -> float:
        times = [math.inf]
        if self.next_arrival < len(self.arrivals):
            times.append(self.arrivals[self.next_arrival].arrival_s)
        if self.external_steps:
            times.append(self.external_steps[0][0])
        times.extend(self.retry_at)
        speeds: dict[int, float] = {}
        for r in self.runs.values():
            if r.phase in ("loading", "transcribing"):
                if r.gpu not in speeds:
                    speeds[r.gpu] = self._speed(r.gpu)
                times.append(self.t + max(0.0, r.remaining) / speeds[r.gpu])
        return min(times)

    def _events(self) -> None:
        """Everything due at self.t: arrivals (the watcher enqueues), external load changes,
        retries coming due, and work phases ending (the worker sends a message)."""
        while (self.next_arrival < len(self.arrivals)
               and self.arrivals[self.next_arrival].arrival_s <= self.t + EPS):
            spec = self.arrivals[self.next_arrival]
            self.next_arrival += 1
            task = self.queue.enqueue(NewTask(
                source=spec.source, size=spec.n + 1, mtime_ns=spec.n + 1, model=spec.model,
                audio_seconds=spec.audio_s, priority=spec.priority,
            ))
            assert task is not None
            self.spec_by_id[task.id] = spec
            self.arrived[task.id] = self.t
            self.dirty = True
        while self.external_steps and self.external_steps[0][0] <= self.t + EPS:
            _, mbs = self.external_steps.pop(0)
            for gpu, mb in enumerate(mbs):
                self.external[gpu] = mb
                self.backend.set_external(gpu, mb)
                self._track_true(gpu)  # the moment it overshoots, before CUDA fails a task
                # Another program grew: the newest of our tasks there hits CUDA OOM.
                while self._true_used(gpu) > self.totals[gpu]:
                    victims = [r for r in self.runs.values() if r.gpu == gpu and self._holds(r)]
                    if not victims:
                        break
                    self._oom(max(victims, key=lambda r: (r.started_s, r.task_id)))
            self.dirty = True
        if any(at <= self.t + EPS for at in self.retry_at):
            self.retry_at = [at for at in self.retry_at if at > self.t + EPS]
            self.dirty = True
        for r in sorted(self.runs.values(), key=lambda r: r.task_id):
            if r.phase not in ("loading", "transcribing") or r.remaining > EPS * 1e3:
                continue
            if r.phase == "loading":
                self.mailbox.append(("loaded", r, self.t - r.phase_started_s))
                r.phase, r.phase_started_s = "transcribing", self.t
                r.remaining = r.spec.transcribe_s(self.totals[r.gpu])
            else:
                self.mailbox.append(("done", r, self.t - r.phase_started_s))
                r.phase = "finished"

    # ---- memory truth ----------------------------------------------------------------------
    @staticmethod
    def _holds(r: Run) -> bool:
        return r.phase in ("loading", "transcribing", "finished")

    def _true_used(self, gpu: int) -> float:
        return self.external[gpu] + sum(r.spec.peak_mb for r in self.runs.values()
                                        if r.gpu == gpu and self._holds(r))

    def _track_true(self, gpu: int) -> None:
        st = self.stats[gpu]
        st.peak_true_mb = max(st.peak_true_mb, self._true_used(gpu))

    def _oom(self, r: Run) -> None:
        r.phase = "oom"
        self.oom += 1
        self.mailbox.append(("oom", r, 0.0))
        log.warning("[%s] t=%.0f s: task %s (%s) out of memory on GPU %d", self.policy, self.t,
                    r.task_id, r.spec.model, r.gpu)

    # ---- the dispatcher ----------------------------------------------------------------------
    def _tick(self) -> None:
        """Dispatcher.tick: collect worker messages, then start what the policy allows."""
        mail, self.mailbox = self.mailbox, []
        for kind, r, seconds in mail:
            tid, name = r.task_id, self.names[r.gpu]
            if kind == "loaded":
                self.pool.materialise(tid)
                # NVML would show what the process really holds, not our estimate.
                self.backend.hold(tid, r.gpu, int(round(r.spec.peak_mb)))
                self.queue.start_processing(tid, WORKER, seconds)
            elif kind == "done":
                self.queue.complete(
                    tid, WORKER, transcribe_seconds=seconds, audio_seconds=r.spec.audio_s,
                    vram_peak_mb=int(round(r.spec.peak_mb)),
                )
                self.calibration.record(name, r.spec.model, "fp16", peak_mb=r.spec.peak_mb,
                                        rtf=seconds / r.spec.audio_s)
                self.finished[tid] = self.t
                self.last_finisher = (f"{r.spec.model} {r.spec.audio_s:.0f} s audio on GPU "
                                      f"{r.gpu}, claimed at {r.started_s:.0f} s")
                self._settle(r)
                if self.settled % 100 == 0:
                    log.info("[%s] %d/%d settled at t=%.0f s", self.policy, self.settled,
                             len(self.trace), self.t)
            else:  # out of memory: a resource error, like Dispatcher._handle on a messages.Error
                self.calibration.out_of_memory(name, r.spec.model)
                task = self.queue.fail(
                    tid, WORKER, "out_of_memory", "CUDA out of memory (simulated)",
                    retryable=True, backoff_seconds=self.sched.backoff_seconds, resource=True,
                )
                self.runs.pop(tid)
                self.pool.release(tid)
                if task is not None and task.status == FAILED:
                    self.settled += 1
                elif task is not None and task.next_attempt_at is not None:
                    self.retry_at.append((task.next_attempt_at - self.t0).total_seconds())
            self.dirty = True
        if self.dirty:
            self._dispatch()

    def _settle(self, r: Run) -> None:
        self.runs.pop(r.task_id)
        self.pool.release(r.task_id)
        self.settled += 1

    def _dispatch(self) -> None:
        """Dispatcher._dispatch with the policy's choice instead of always the planner's."""
        self.dirty = False
        for _ in range(100):
            decision = self._decide()
            if decision is None:
                return
            claimed = self.queue.claim(
                decision.task.id, WORKER, self.sched.lease_seconds,
                device=f"cuda:{decision.gpu}", vram_estimate_mb=decision.estimate_mb,
            )
            if claimed is None:
                continue
            self.pool.reserve(claimed.id, decision.gpu, decision.estimate_mb)
            runtime = self.planner.runtime_s(claimed, self.names[decision.gpu])
            self._start(claimed, decision.gpu, decision.estimate_mb, runtime)
        self.dirty = True  # hit the per-tick bound: go on at the next tick

    def _decide(self) -> Decision | None:
        if self.policy == "ours":
            return self.planner.next(self.queue.ready(limit=50), self._actives())
        if self.policy == "serial" and self.runs:
            return None
        ready = self.queue.ready(limit=1)
        if not ready:
            return None
        head = ready[0]
        if self.policy == "fifo":
            placed = self.pool.place(head.model)
        else:  # serial: the biggest card only
            others = [i for i in range(len(self.totals)) if i != self.biggest]
            placed = self.pool.place(head.model, exclude=others)
        return None if placed is None else Decision(head, *placed)

    def _actives(self) -> list[Active]:
        return [Active(r.task_id, r.gpu, r.estimate_mb, r.expected_end)  # type: ignore[arg-type]
                for r in self.runs.values()]

    def _start(self, task: Task, gpu: int, estimate_mb: int, runtime_s: float) -> None:
        spec = self.spec_by_id[task.id]
        r = Run(spec, task.id, gpu, estimate_mb,
                self.clock.now() + timedelta(seconds=runtime_s), self.t,
                remaining=spec.load_s(), phase_started_s=self.t)
        self.runs[task.id] = r
        self.first_claim.setdefault(task.id, self.t)
        self.last_claim = self.t
        st = self.stats[gpu]
        st.busy_tasks += 1
        st.peak_tasks = max(st.peak_tasks, sum(1 for x in self.runs.values() if x.gpu == gpu))
        st.peak_reserved_mb = max(st.peak_reserved_mb, sum(
            res.mb for res in self.pool.reservations() if res.gpu == gpu))
        self._track_true(gpu)  # over the total means this start is the one that fails
        if self._true_used(gpu) > self.totals[gpu]:
            self._oom(r)

    # ---- the event loop ----------------------------------------------------------------------
    def run(self) -> Outcome:
        real0 = time.perf_counter()
        tick = -1
        while self.settled < len(self.trace):
            te = self._next_event()
            if self.dirty or self.mailbox:
                target = tick + 1
            elif te == math.inf:
                log.error("[%s] stuck at t=%.0f s: %d task(s) can never start", self.policy,
                          self.t, len(self.trace) - self.settled)
                break
            else:
                # Nothing changed since the last tick whose policy said None: every tick until
                # the next event would decide None again (the decision only gets stricter as
                # time passes), so jump to the first tick at or after that event.
                target = max(tick + 1, math.ceil(te - EPS))
            while te <= target + EPS:
                self._advance(max(self.t, te))
                self._events()
                te = self._next_event()
            self._advance(float(target))
            tick = target
            self._tick()
        counts = self.queue.counts()
        prio_ids = {tid for tid, spec in self.spec_by_id.items() if spec.priority > 0}
        waits = {tid: self.first_claim[tid] - self.arrived[tid] for tid in self.first_claim}
        out = Outcome(
            policy=self.policy,
            makespan=max(self.finished.values(), default=0.0),
            completed=counts[COMPLETED],
            failed=counts[FAILED],
            unfinished=len(self.trace) - counts[COMPLETED] - counts[FAILED],
            oom=self.oom,
            waits=waits,
            priority_waits=[w for tid, w in waits.items() if tid in prio_ids],
            gpus=self.stats,
            budgets=[self.pool.budget_mb(g) for g in self.backend.devices()],
            totals=self.totals,
            names=self.names,
            last_claim=self.last_claim,
            last_finisher=self.last_finisher,
            real_s=time.perf_counter() - real0,
            calibration=self.calibration.table(),
        )
        self.engine.dispose()
        return out


# ---- report ------------------------------------------------------------------------------------
def describe_trace(trace: Sequence[FileSpec], args: argparse.Namespace) -> None:
    hours = sum(f.audio_s for f in trace) / 3600
    per_model = {m: sum(1 for f in trace if f.model == m) for m in MODEL_WEIGHTS}
    audio = sorted(f.audio_s for f in trace)
    print(f"workload: {len(trace)} files, {hours:.1f} h of audio (median "
          f"{audio[len(audio) // 2]:.0f} s, max {audio[-1]:.0f} s), seed {args.seed}")
    print("  models: " + ", ".join(f"{m} {n}" for m, n in per_model.items()))
    print(f"  priority files: {sum(1 for f in trace if f.priority > 0)}; arrival "
          f"{args.arrival}: last file at {max(f.arrival_s for f in trace):.0f} s")
    print(f"  GPUs: {', '.join(str(g) for g in args.gpus)} MiB; external load: "
          + "; ".join(f"{t:.0f} s: {mbs}" for t, mbs in args.external)
          + f"; saturation C={args.saturation}; max_tasks_per_gpu {args.max_tasks_per_gpu}; "
          f"reserved_mb {args.reserved_mb}")


def describe_bound(lb: LowerBound) -> None:
    print(f"lower bound: {lb.value:.0f} s = max(longest task alone {lb.longest_alone:.0f}, "
          f"memory-seconds/usable {lb.memory:.0f}, compute-seconds/(C×GPUs) {lb.compute:.0f}, "
          f"last arrival + its runtime {lb.last_arrival:.0f}; compute with per-card speeds "
          f"{lb.compute_per_card:.0f}, max arrival + runtime {lb.release:.0f})")
    print(f"  (the issue's four terms alone give {lb.issue:.0f} s)")


def describe(o: Outcome, lb: LowerBound) -> None:
    print(f"\npolicy {o.policy}  ({o.real_s:.1f} s real time)")
    print(f"  makespan        {o.makespan:8.0f} s   = {o.makespan / lb.value:.3f} × lower bound "
          f"({o.makespan / lb.issue:.3f} × the issue's four terms)")
    print(f"  queue wait      mean {o.mean_wait:.0f} s, max {o.max_wait:.0f} s"
          + (f"   (priority files: mean {sum(o.priority_waits) / len(o.priority_waits):.0f} s,"
             f" max {max(o.priority_waits):.0f} s)" if o.priority_waits else ""))
    print(f"  tasks           {o.completed} completed, {o.failed} failed, {o.unfinished} "
          f"unfinished; OOM {o.oom}")
    print(f"  tail            last claim at {o.last_claim:.0f} s; last to finish: "
          f"{o.last_finisher}")
    for i, st in enumerate(o.gpus):
        busy = st.busy_integral / o.makespan if o.makespan else 0.0
        print(f"  GPU {i} {o.names[i]:>22}: reserved peak {st.peak_reserved_mb:6d} / budget "
              f"{o.budgets[i]:6d} MiB; true peak {st.peak_true_mb:6.0f} / total "
              f"{o.totals[i]:6d} MiB; {st.busy_tasks} tasks, at most {st.peak_tasks} at once; "
              f"throughput used {busy:.0%}")


def describe_calibration(o: Outcome, sizes: Sequence[int]) -> None:
    print(f"\ncalibration at the end (policy {o.policy}): estimate vs true mean peak, "
          "rtf learned vs true alone")
    for row in o.calibration:
        gpu = o.names.index(row["gpu"])
        model = row["model"]
        print(f"  {row['gpu']:>22} {model:>9}: estimate {row['estimate_mb']:6d} MiB "
              f"(table×1.2 {row['default_mb']:6d}, true ~{TRUE_PEAK_MB[model]:5d}); "
              f"rtf {row['real_time_factor'] or 0:.4f} (true alone "
              f"{true_rtf(model, sizes[gpu]):.4f}); {row['samples']} samples")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--files", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--arrival", choices=("burst", "poisson"), default="burst",
                   help="burst: --bursts drops of files (1 = all at once); poisson: one by one")
    p.add_argument("--bursts", type=int, default=1, help="number of drops for --arrival burst")
    p.add_argument("--burst-gap", type=float, default=900.0, help="seconds between drops")
    p.add_argument("--load", type=float, default=0.8,
                   help="poisson: offered load as a share of the cards' compute capacity")
    p.add_argument("--priority-share", type=float, default=0.1,
                   help="share of files with priority 1 (others 0)")
    p.add_argument("--gpus", type=lambda s: [int(x) for x in s.split(",")],
                   default=[24576, 81920], help="card sizes in MiB")
    p.add_argument("--external", default="0,0",
                   help="other programs' MiB per card: '8192,0' or '0@0,0;600@8192,0'")
    p.add_argument("--saturation", type=float, default=3.0,
                   help="C: tasks a card overlaps at full speed (each runs at min(1, C/n))")
    p.add_argument("--max-tasks-per-gpu", type=int, default=5)
    p.add_argument("--reserved-mb", type=int, default=1024)
    p.add_argument("--policies", default=",".join(POLICIES),
                   help="comma-separated subset of " + ", ".join(POLICIES))
    p.add_argument("-v", "--verbose", action="store_true", help="log the service's own lines")
    args = p.parse_args(argv)
    args.external = parse_external(args.external, len(args.gpus))
    args.policies = [x for x in args.policies.split(",") if x]
    if "ours" not in args.policies or any(x not in POLICIES for x in args.policies):
        p.error(f"--policies must include 'ours' and be among {', '.join(POLICIES)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if not args.verbose:
        for name in ("service", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
    trace = make_trace(args)
    settings = GpuSettings(max_tasks_per_gpu=args.max_tasks_per_gpu, reserved_mb=args.reserved_mb)
    least_external = [min(mbs[i] for _, mbs in args.external) for i in range(len(args.gpus))]
    usable = [t * settings.max_utilization - max(settings.reserved_mb, e)
              for t, e in zip(args.gpus, least_external, strict=True)]
    lb = lower_bound(trace, args.gpus, usable, args.saturation)
    describe_trace(trace, args)
    describe_bound(lb)
    outcomes: dict[str, Outcome] = {}
    with tempfile.TemporaryDirectory(prefix="dropscribe-sim-") as tmp:
        for policy in args.policies:
            log.info("simulating policy %s", policy)
            outcomes[policy] = Simulation(policy, trace, args, Path(tmp)).run()
            describe(outcomes[policy], lb)
    ours = outcomes["ours"]
    describe_calibration(ours, args.gpus)
    print("\nsummary (makespan s, × lower bound, × issue's terms, mean/max wait s, OOM, "
          "completed)")
    for o in outcomes.values():
        print(f"  {o.policy:>7}: {o.makespan:8.0f} {o.makespan / lb.value:6.3f} "
              f"{o.makespan / lb.issue:6.3f} {o.mean_wait:8.0f} {o.max_wait:8.0f} {o.oom:4d} "
              f"{o.completed:5d}")
    ratio = ours.makespan / lb.value
    speedup = outcomes["serial"].makespan / ours.makespan if "serial" in outcomes else math.nan
    verdict = [f"makespan {'<=' if ratio <= TARGET_VS_LOWER_BOUND else '>'} "
               f"{TARGET_VS_LOWER_BOUND}× bound",
               f"speedup {'>=' if speedup >= TARGET_SPEEDUP_VS_SERIAL else '<'} "
               f"{TARGET_SPEEDUP_VS_SERIAL}× serial",
               f"OOM {'= 0' if ours.oom == 0 else '> 0'}",
               f"{ours.unfinished} unfinished"]
    print("targets: " + "; ".join(verdict))
    print(f"RESULT makespan_vs_lower_bound={ratio:.3f} speedup_vs_serial={speedup:.2f} "
          f"oom={ours.oom} max_wait_s={ours.max_wait:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
