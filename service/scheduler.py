"""The dispatcher: picks the next task, claims it, runs it in a worker process, records results.

Its `tick()` runs as a short APScheduler job and never blocks: it reads worker messages,
notices dead workers, renews leases, claims tasks that fit (CPU slots or the VRAM pool) and
keeps `prestart_workers` spare worker processes ready (their imports done) so a task does not
wait ~1.5 s for Python, torch and whisper to start. Between ticks, `wait_for_workers()` lets
the runner tick the moment a worker reports or exits, so the next file starts at once instead
of up to `interval_seconds` later.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from multiprocessing.connection import Connection, wait
from pathlib import Path, PurePosixPath

from . import engines, fsops, minutes, options, outcome, outputs
from .calibration import Calibration, default_rtf
from .clock import Clock
from .config import Settings
from .messages import Done, Error, FromWorker, Job, Loaded, Log, Progress, Ready, StartupError, Stop
from .planner import Active, Planner
from .ram import RamBudget
from .tables import Task
from .tasks import TaskQueue
from .vram import VramPool
from .worker import PRELOAD
from .worker import main as worker_main

log = logging.getLogger(__name__)
worker_log = logging.getLogger("service.worker")  # worker records, relayed over their pipes


def node_id() -> str:
    """Stable id of this service process: host:pid (shown in task rows and events)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_context(method: str = "auto") -> multiprocessing.context.BaseContext:
    """How worker processes start (`scheduler.start_method`). Never plain fork: a forked CUDA
    context is unusable.

    forkserver (auto on POSIX): a server process that has imported torch and whisper once (it
    never touches CUDA), so a worker starts in milliseconds instead of ~1.5 s of imports that
    would compete for the CPU with the running task. spawn (auto on Windows, where there is no
    forkserver; chosen on Linux it runs the Windows way, as CI does once): pre-started workers
    hide the imports. ValueError when forkserver is asked for where there is none.
    """
    available = multiprocessing.get_all_start_methods()
    if method == "forkserver" and "forkserver" not in available:
        raise ValueError("scheduler.start_method: forkserver is not available on this system "
                         "(Windows); use auto or spawn")
    if method in ("auto", "forkserver") and "forkserver" in available:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


@dataclass
class _Proc:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    ready: bool = False


@dataclass
class Running:
    task: Task
    proc: _Proc
    gpu: int | None
    estimate_mb: int = 0
    expected_end: datetime | None = None
    started: float = field(default_factory=time.monotonic)
    done: bool = False
    ok: bool = False


@dataclass
class Warm:
    """A worker that finished a file and keeps its model loaded for the next one."""

    proc: _Proc
    model: str
    gpu: int | None
    mb: int
    key: int  # its VRAM reservation's key (negative: not a task id)
    idle_since: float = field(default_factory=time.monotonic)
    kind: dict = field(default_factory=dict)  # engine and precision of its loaded model


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        queue: TaskQueue,
        clock: Clock,
        pool: VramPool | None,
        on_settled: Callable[[Task], None],
        worker_id: str | None = None,
        calibration: Calibration | None = None,
        ram: RamBudget | None = None,
    ) -> None:
        self.settings = settings
        self.ram = ram or RamBudget(settings.memory.reserve_mb, settings.memory.piece_minutes)
        self.queue = queue
        self.clock = clock
        self.pool = pool
        self.calibration = calibration
        self.planner = None
        self._gpu_names: dict[int, str] = {}
        self._gpu_uuids: dict[int, str | None] = {}
        if pool is not None:
            rtf = calibration.rtf if calibration is not None else (lambda g, m: default_rtf(m))
            self.planner = Planner(pool, clock, rtf, self._kind)
            cards = pool.backend.devices()
            self._gpu_names = {g.index: g.name for g in cards}
            self._gpu_uuids = {g.index: g.uuid for g in cards}
        self.on_settled = on_settled
        self.worker_id = worker_id or node_id()
        self.running: dict[int, Running] = {}
        self._spares: list[_Proc] = []
        self._warm: list[Warm] = []
        self._exiting: list[tuple[_Proc, int]] = []  # done; VRAM is released once they exit
        self._ctx = worker_context(settings.scheduler.start_method)
        self._lock = threading.Lock()
        self._last_renew = 0.0
        self._stopping = False
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)  # see wake()
        self._start_errors: set[str] = set()  # reasons already logged at ERROR
        self._start_failures = 0
        self._last_start_error = ""
        self._next_spawn = 0.0

    # ---- the job -------------------------------------------------------------------------
    def tick(self) -> None:
        if not self._lock.acquire(blocking=False):
            return  # the previous tick is still running; APScheduler will call again
        try:
            self._collect()
            self._renew()
            if not self._stopping:
                self._dispatch()
                self._prestart()
        finally:
            self._lock.release()

    def wait_for_workers(self, timeout: float) -> bool:
        """Block until a running worker sends a message or a finished one exits (True), or
        until `timeout` or wake() (False). Called from the runner's own thread; tick() then
        does the work, under its lock."""
        watched: list = [self._wake_r]
        for run in list(self.running.values()):
            watched += [run.proc.conn, run.proc.process.sentinel]
        watched += [proc.process.sentinel for proc, _ in list(self._exiting)]
        watched += [w.proc.process.sentinel for w in list(self._warm)]
        try:
            ready = wait(watched, timeout)
        except (OSError, ValueError):  # tick() closed a pipe meanwhile: something changed
            return True
        if self._wake_r in ready:
            while self._wake_r.poll():
                self._wake_r.recv_bytes()
            ready.remove(self._wake_r)
        return bool(ready)

    def wake(self) -> None:
        """Make wait_for_workers() look again: a worker started, or the service is stopping."""
        try:
            self._wake_w.send_bytes(b"")
        except OSError:
            pass

    # ---- starting work ----------------------------------------------------------------------
    def _dispatch(self) -> None:
        self._feed_warm()
        if self.planner is None:
            self._dispatch_cpu()
            return
        for _ in range(100):  # bounded: a lost claim race just moves on to the next pick
            decision = self.planner.next(self.queue.ready(limit=50), self._actives())
            if decision is None:
                return
            task, gpu, estimate = decision.task, decision.gpu, decision.estimate_mb
            if not self._ram_allows(task):
                return  # the planner's first pick waits for memory: so does everything after
            claimed = self.queue.claim(
                task.id, self.worker_id, self.settings.scheduler.lease_seconds,
                device=f"cuda:{gpu}", vram_estimate_mb=estimate,
            )
            if claimed is None:
                continue  # another node took it
            self.pool.reserve(claimed.id, gpu, estimate)
            runtime = self.planner.runtime_s(claimed, self._gpu_names.get(gpu, ""))
            self._start(claimed, gpu, estimate, self.clock.now() + timedelta(seconds=runtime))

    def _feed_warm(self) -> None:
        """A warm worker takes the next pending file of its model, on its GPU."""
        if not self._warm:
            return
        ready = self.queue.ready(limit=50)
        for warm in list(self._warm):
            task = next((t for t in ready if t.model == warm.model
                         and self._kind(t) == warm.kind), None)
            if task is None or not warm.proc.process.is_alive():
                continue
            device = "cpu" if warm.gpu is None else f"cuda:{warm.gpu}"
            claimed = self.queue.claim(
                task.id, self.worker_id, self.settings.scheduler.lease_seconds,
                device=device, vram_estimate_mb=warm.mb or None,
            )
            ready.remove(task)
            if claimed is None:
                continue
            self._warm.remove(warm)
            self._release(warm.key)
            if self.pool is not None and warm.gpu is not None:
                self.pool.reserve(claimed.id, warm.gpu, warm.mb)
                self.pool.materialise(claimed.id)
            end = None
            if self.planner is not None and warm.gpu is not None:
                runtime = self.planner.runtime_s(claimed, self._gpu_names.get(warm.gpu, ""))
                end = self.clock.now() + timedelta(seconds=runtime)
            self._start(claimed, warm.gpu, warm.mb, end, proc=warm.proc)

    def _dispatch_cpu(self) -> None:
        """No GPU: priority then age, `cpu.max_concurrent_tasks` at once."""
        while len(self.running) < self.settings.cpu.max_concurrent_tasks:
            for task in self.queue.ready(limit=10):
                if not self._ram_allows(task):
                    return
                claimed = self.queue.claim(
                    task.id, self.worker_id, self.settings.scheduler.lease_seconds, device="cpu"
                )
                if claimed is not None:
                    self._start(claimed, None)
                    break
            else:
                return

    def _ram_allows(self, task: Task) -> bool:
        running = [(r.proc.process.pid, r.task.model, self._kind(r.task)["engine"])
                   for r in self.running.values()]
        return self.ram.fits(task.id, task.model, running, self._kind(task)["engine"])

    def _actives(self) -> list[Active]:
        now = self.clock.now()
        return [
            Active(tid, r.gpu, r.estimate_mb, r.expected_end or now)
            for tid, r in self.running.items()
            if r.gpu is not None
        ]

    def _output_stem(self, task: Task, out_dir: Path) -> str:
        """The task's transcript name: fixed at its first start, free of other files' names."""
        if "output_stem" not in (task.options or {}):
            folder = PurePosixPath(task.source).parent  # names given to running tasks, any node
            taken = {t.output_stem for t in self.queue.active()
                     if t.id != task.id and PurePosixPath(t.source).parent == folder}
            stem = outputs.transcript_stem(out_dir, PurePosixPath(task.source).stem, taken)
            task.options = {**(task.options or {}), "output_stem": stem}
            self.queue.update_fields(task.id, options=task.options)
        return task.output_stem

    def _job(self, task: Task, gpu: int | None) -> Job:
        cfg = self.settings
        rel = PurePosixPath(task.source)
        out_dir = outputs.output_dir_for(cfg.outbox, rel)
        formats = task.options.get("output_formats") or cfg.transcribe.output_formats
        threads = cfg.cpu.threads_per_task or max(
            1, (os.cpu_count() or 1) // cfg.cpu.max_concurrent_tasks
        )
        simulated = self.pool is not None and self.pool.backend.simulated
        stem = self._output_stem(task, out_dir)
        longest = max((f".{fmt}" for fmt in formats), key=len)
        fsops.check_path_length(out_dir / f"{stem}{longest}")  # Windows' MAX_PATH: say so now
        return Job(
            task_id=task.id,
            source_path=str(outputs.safe_join(cfg.inbox, task.source)),
            source_name=task.source,
            model=task.model,
            models_dir=str(cfg.models_dir),
            allow_download=cfg.models.allow_download,
            out_dir=str(out_dir),
            stem=stem,
            formats=tuple(formats),
            language=task.language,
            task=task.task,
            decoding=options.resolve(cfg.transcribe, task.options or {}).model_dump(mode="json"),
            gpu=None if simulated else gpu,
            gpu_uuid=None if simulated or gpu is None else self._gpu_uuids.get(gpu),
            threads=threads,
            progress_seconds=cfg.scheduler.progress_seconds,
            keep_warm_seconds=cfg.models.keep_warm_seconds,
            inbox=str(cfg.inbox),
            outbox=str(cfg.outbox),
            piece_seconds=cfg.memory.piece_minutes * 60,
            audio_seconds=task.audio_seconds or 0.0,
            ui_language=cfg.ui_language,
        )

    def _start(
        self,
        task: Task,
        gpu: int | None,
        estimate_mb: int = 0,
        expected_end: datetime | None = None,
        proc: _Proc | None = None,
    ) -> None:
        try:
            job = self._job(task, gpu)
        except ValueError as err:  # an unsafe path: never write outside the outbox
            if isinstance(err, options.OptionsError):
                kind, message = "bad_options", f"Invalid transcription options: {err}"
            elif isinstance(err, fsops.PathTooLongError):
                kind, message = "path_too_long", f"Cannot write the transcripts: {err}"
            else:
                kind, message = "unsafe_path", f"Refused: {err}"
            self._failed(task.id, kind, message, retryable=False)
            self._release(task.id)
            if proc is not None:
                self._exiting.append((proc, 0))
                proc.conn.send(Stop())
            return
        proc = proc or self._take_spare() or self._spawn()
        try:
            proc.conn.send(job)
        except (OSError, EOFError) as err:
            proc.process.join(timeout=5)
            failures = self._start_failures
            self._drain_spare(proc)  # it died: did it say why?
            self._release(task.id)
            if self._start_failures > failures:  # it could not start: back off, say why
                self._failed(task.id, "worker_start", self._last_start_error,
                             retryable=True, resource=True)
                return
            log.warning("worker could not take task %s (%s); requeueing", task.id, err)
            proc.process.kill()
            self.queue.requeue(task.id, self.worker_id, "worker failed to start")
            return
        self.running[task.id] = Running(task, proc, gpu, estimate_mb, expected_end)
        self.wake()
        log.info("task %s loading %s on %s: %s", task.id, task.model, task.device, task.source)

    def _spawn(self) -> _Proc:
        parent, child = self._ctx.Pipe()
        p = self._ctx.Process(
            target=worker_main, args=(child,), daemon=True, name="dropscribe-worker"
        )
        p.start()
        child.close()
        return _Proc(p, parent)

    def _take_spare(self) -> _Proc | None:
        while self._spares:
            proc = self._spares.pop(0)
            if proc.process.is_alive():
                return proc
            self._drain_spare(proc)
        return None

    def _prestart(self) -> None:
        alive = []
        for proc in self._spares:
            if proc.process.is_alive():
                alive.append(proc)
            else:
                self._drain_spare(proc)
        self._spares = alive
        if self.running and self._ctx.get_start_method() == "forkserver":
            return  # a fork takes milliseconds: don't compete with running work for the CPU
        if time.monotonic() < self._next_spawn:
            return  # the last spare died while starting: back off
        want = self.settings.scheduler.prestart_workers
        while len(self._spares) < want:
            self._spares.append(self._spawn())

    # ---- following work ----------------------------------------------------------------------
    def _collect(self) -> None:
        for task_id, run in list(self.running.items()):
            alive = run.proc.process.is_alive()  # before draining: a "done" sent just before
            try:                                 # exiting is then always read
                while not run.done and run.proc.conn.poll():
                    self._handle(run, run.proc.conn.recv())
            except (EOFError, OSError):
                pass  # the pipe closed: the exit check below decides what it means
            if not run.done and alive:
                self._enforce_timeout(task_id, run)
                continue
            self.running.pop(task_id, None)
            if not run.done:
                run.proc.process.join(timeout=1)
                outcome.discard_partial(self.settings, run.task)
                code = run.proc.process.exitcode
                self._failed(
                    task_id, "worker_crashed",
                    f"The worker process stopped unexpectedly (exit code {code}).",
                    retryable=True,
                )
                self._release(task_id)
            elif run.ok and alive and self.settings.models.keep_warm_seconds > 0:
                self._keep_warm(task_id, run)
            else:
                self._exiting.append((run.proc, task_id))
        self._reap_exited()

    def time_limit_s(self, run: Running) -> float:
        """How long a task may run: audio length × timeout_factor (×10 on the CPU), at least
        timeout_min_seconds. A stuck decode or a hung driver does not hold a slot forever."""
        cfg = self.settings.scheduler
        audio = run.task.audio_seconds or 0.0
        factor = cfg.timeout_factor * (10 if run.gpu is None else 1)
        return max(cfg.timeout_min_seconds, audio * factor)

    def _enforce_timeout(self, task_id: int, run: Running) -> None:
        limit = self.time_limit_s(run)
        if time.monotonic() - run.started <= limit:
            return
        self._stop_task(task_id)
        self._failed(
            task_id, "timeout",
            f"The transcription took longer than {limit:.0f} seconds and was stopped "
            "(scheduler.timeout_factor / timeout_min_seconds in settings.yaml).",
            retryable=True,
        )

    def _stop_task(self, task_id: int) -> Running:
        """Kill a running task's worker and return its memory; the caller records why."""
        run = self.running.pop(task_id)
        run.done = True
        run.proc.process.kill()
        run.proc.process.join(timeout=5)
        outcome.discard_partial(self.settings, run.task)
        self._release(task_id)
        return run

    def _keep_warm(self, task_id: int, run: Running) -> None:
        key = -(run.proc.process.pid or task_id)
        self._release(task_id)
        if self.pool is not None and run.gpu is not None:
            self.pool.reserve(key, run.gpu, run.estimate_mb)
            self.pool.materialise(key)
        self._warm.append(Warm(run.proc, run.task.model, run.gpu, run.estimate_mb, key,
                               kind=self._kind(run.task)))

    def _reap_exited(self) -> None:
        """Release VRAM of workers that have really exited; retire idle warm workers."""
        limit = self.settings.models.keep_warm_seconds + 10
        for warm in list(self._warm):
            idle = time.monotonic() - warm.idle_since
            if not warm.proc.process.is_alive() or idle > limit:
                self._warm.remove(warm)
                if warm.proc.process.is_alive():
                    warm.proc.process.kill()  # it should have left by itself after the idle time
                self._exiting.append((warm.proc, warm.key))
        still = []
        for proc, key in self._exiting:
            if proc.process.is_alive():
                still.append((proc, key))
                continue
            proc.process.join(timeout=0)
            proc.conn.close()
            self._release(key)
        self._exiting = still

    def _handle(self, run: Running, msg: FromWorker) -> None:
        tid = run.task.id
        match msg:
            case Ready():
                self._start_failures = 0
            case Log(level=level, logger=name, text=text):
                self._worker_log(run.proc, level, name, text, task_id=tid)
            case StartupError(reason=reason):
                run.done = True
                self._start_failed(reason)
                # Not the file's fault: requeued without an attempt, a few times (then spent).
                self._failed(tid, "worker_start", reason, retryable=True, resource=True)
            case Loaded(load_seconds=seconds):
                if self.pool is not None:
                    self.pool.materialise(tid)
                self.queue.start_processing(tid, self.worker_id, seconds)
                log.info("task %s processing (model loaded in %.1f s)", tid, seconds)
            case Progress(fraction=fraction):
                self.queue.set_progress(tid, self.worker_id, fraction)
            case Done():
                task = self.queue.complete(
                    tid, self.worker_id,
                    transcribe_seconds=msg.transcribe_seconds,
                    audio_seconds=msg.audio_seconds or run.task.audio_seconds,
                    detected_language=msg.detected_language,
                    outputs=list(msg.outputs), vram_peak_mb=msg.vram_peak_mb,
                    sha256=msg.sha256, diarize_seconds=msg.diarize_seconds,
                    **minutes.wanted(self.settings),
                )
                run.done = run.ok = True
                self._learn(run, msg)
                if task is not None:
                    log.info(
                        "task %s completed in %.1f s: %s", tid, time.monotonic() - run.started,
                        run.task.source,
                    )
                    self.on_settled(task)
            case Error():
                run.done = True
                if msg.resource and self.calibration is not None and run.gpu is not None:
                    new = self.calibration.out_of_memory(self._gpu_names[run.gpu],
                                                         run.task.model, **self._kind(run.task))
                    log.warning("task %s ran out of GPU memory: %s estimate raised to %d MiB",
                                tid, run.task.model, new)
                self._failed(tid, msg.kind, msg.message, retryable=msg.retryable,
                             resource=msg.resource)

    def _worker_log(self, proc: _Proc, level: int, name: str, text: str,
                    task_id: int | None = None) -> None:
        """A worker's log record, written into the service log (and so the Event Log)."""
        where = f"task {task_id}" if task_id is not None else "spare"
        worker_log.log(level, "worker %s (%s) %s: %s", proc.process.pid, where, name, text)

    def _start_failed(self, reason: str) -> None:
        """A worker died while starting: say why at ERROR once per reason, and wait longer
        before starting the next spare (1 s, 2 s, 4 s … 5 min), not a spawn loop."""
        self._start_failures += 1
        self._last_start_error = reason
        delay = min(300.0, 2.0 ** (self._start_failures - 1))
        self._next_spawn = time.monotonic() + delay
        if reason not in self._start_errors:
            self._start_errors.add(reason)
            log.error("%s", reason)
        else:
            log.debug("worker start failed again (%d), next try in %.0f s", self._start_failures,
                      delay)

    def _drain_spare(self, proc: _Proc) -> None:
        """What a spare said before it died (its log, why it could not start)."""
        try:
            while proc.conn.poll():
                match proc.conn.recv():
                    case Log(level=level, logger=name, text=text):
                        self._worker_log(proc, level, name, text)
                    case StartupError(reason=reason):
                        self._start_failed(reason)
                    case Ready():
                        self._start_failures = 0
        except (EOFError, OSError):
            pass
        proc.conn.close()

    def _learn(self, run: Running, done: Done) -> None:
        """Feed the measured RAM and VRAM peaks and the speed back into the estimates."""
        kind = self._kind(run.task)
        engine = done.engine or kind["engine"]
        self.ram.learn(run.task.model, done.rss_peak_mb, engine)
        if self.calibration is None or run.gpu is None:
            return
        audio = done.audio_seconds or 0
        rtf = done.transcribe_seconds / audio if audio else None
        self.calibration.record(
            self._gpu_names[run.gpu], run.task.model, done.precision or kind["precision"],
            peak_mb=done.vram_peak_mb, rtf=rtf, engine=engine,
        )

    def _kind(self, task: Task) -> dict[str, str]:
        """The task's engine and precision (its VRAM estimate and calibration row)."""
        return engines.kind(self.settings.transcribe, task.options or {})

    def _failed(
        self, task_id: int, kind: str, message: str, *, retryable: bool, resource: bool = False
    ) -> None:
        task = self.queue.fail(
            task_id, self.worker_id, kind, message, retryable=retryable, resource=resource,
            backoff_seconds=self.settings.scheduler.backoff_seconds,
        )
        if task is None:
            return
        if task.status == "failed":
            log.error("task %s failed for good: %s: %s", task_id, task.source, message)
            self.on_settled(task)
        else:
            log.warning(
                "task %s attempt failed (%s), will retry after %s: %s",
                task_id, message, task.next_attempt_at, task.source,
            )

    def _release(self, task_id: int) -> None:
        if self.pool is not None:
            self.pool.release(task_id)

    def _renew(self) -> None:
        lease = self.settings.scheduler.lease_seconds
        now = time.monotonic()
        if self.running and now - self._last_renew >= min(lease / 3, 5.0):
            self._last_renew = now
            self.queue.renew_leases(self.worker_id, list(self.running), lease)
            for task_id, status in self.queue.statuses(list(self.running)).items():
                if status == "cancelled":  # `cancel ID` from the command line
                    self._stop_task(task_id)
                    log.info("task %s cancelled: worker stopped", task_id)

    # ---- stopping ------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Give every running task back without spending an attempt, then stop all workers.

        Windows allows seconds at shutdown: the requeue is ONE transaction first (nothing is
        left half-recorded if the power goes), then every worker is killed at once and
        waited for together, instead of one by one. Their deaths are not crashes of a task:
        the tasks are already pending, and no exit is examined after this.
        """
        self._stopping = True
        with self._lock:
            runs = dict(self.running)
            for run in runs.values():
                run.done = True  # whatever the worker does now, it is not the task's doing
            self.queue.requeue_all(list(runs), self.worker_id, "service stopped")
            for task_id, run in runs.items():
                log.info("task %s requeued (service stopping): %s", task_id, run.task.source)
            procs = [r.proc for r in runs.values()] + [w.proc for w in self._warm] + [
                p for p, _ in self._exiting]
            for proc in self._spares:
                try:
                    proc.conn.send(Stop())  # a spare leaves by itself
                except OSError:
                    pass
            for proc in procs:
                proc.process.kill()
            deadline = time.monotonic() + 5
            for proc in procs + self._spares:
                proc.process.join(timeout=max(0.0, deadline - time.monotonic()))
                if proc.process.is_alive():
                    proc.process.kill()
                    proc.process.join(timeout=1)
            for task_id, run in runs.items():
                outcome.discard_partial(self.settings, run.task)
                self._release(task_id)
            self.running.clear()
            self._warm.clear()
            self._exiting.clear()
            self._spares.clear()

    def idle(self) -> bool:
        """No task runs and no finished worker still holds memory (warm ones may)."""
        return not self.running and not self._exiting

    def running_summary(self) -> list[dict]:
        return [
            {"task": tid, "source": r.task.source, "model": r.task.model, "gpu": r.gpu,
             "seconds": round(time.monotonic() - r.started, 1)}
            for tid, r in self.running.items()
        ]

