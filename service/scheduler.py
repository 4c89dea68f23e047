"""The dispatcher: picks the next task, claims it, hands it to a worker, records what happened.

Its `tick()` runs as a short APScheduler job and never blocks: it reads the busy workers'
messages (service/messages.py), notices dead workers and tasks over their time limit, renews
leases and stops cancelled tasks, then claims tasks that fit (CPU slots, free RAM, the VRAM
pool) and tops up the spare workers. Between ticks, `wait_for_workers()` lets the runner tick
the moment a worker reports or exits, so the next file starts at once instead of up to
`interval_seconds` later.

The worker processes themselves — spares, warm ones, backoff, reaping — are the WorkerPool's
(service/pool.py); what a worker is told to do is service/jobs.py's. The dispatcher owns the
busy workers (`running`) and everything that touches the queue or reserved memory.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from . import engines, jobs, minutes, outcome
from .calibration import Calibration, default_rtf
from .clock import Clock
from .config import Settings
from .messages import Done, Error, FromWorker, Loaded, Progress, StartupError
from .planner import Active, Planner
from .pool import Warm, Worker, WorkerPool
from .ram import RamBudget
from .tables import Task
from .tasks import TaskQueue
from .vram import VramPool

log = logging.getLogger(__name__)


def node_id() -> str:
    """Stable id of this service process: host:pid (shown in task rows and events)."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Running:
    """A task and the worker running it, from its start until the worker is done with it."""

    task: Task
    proc: Worker
    gpu: int | None
    estimate_mb: int = 0
    expected_end: datetime | None = None
    started: float = field(default_factory=time.monotonic)
    done: bool = False  # the outcome is recorded: whatever the worker does now is not the task's
    ok: bool = False


class Dispatcher:
    """One per service process. `vram` is the VRAM pool (None: CPU only), `workers` the worker
    processes (service.pool); `on_settled` gets each task that reached an end (the runner
    moves its source to archive/ or failed/)."""

    def __init__(
        self,
        settings: Settings,
        queue: TaskQueue,
        clock: Clock,
        vram: VramPool | None,
        on_settled: Callable[[Task], None],
        worker_id: str | None = None,
        calibration: Calibration | None = None,
        ram: RamBudget | None = None,
    ) -> None:
        self.settings = settings
        self.ram = ram or RamBudget(settings.memory.reserve_mb, settings.memory.piece_minutes)
        self.queue = queue
        self.clock = clock
        self.vram = vram
        self.calibration = calibration
        self.planner = None
        self._gpu_names: dict[int, str] = {}
        self._gpu_uuids: dict[int, str | None] = {}
        if vram is not None:
            rtf = calibration.rtf if calibration is not None else (
                lambda g, m, engine=engines.OPENAI, **_: default_rtf(m, engine))
            self.planner = Planner(vram, clock, rtf, self._kind)
            cards = vram.backend.devices()
            self._gpu_names = {g.index: g.name for g in cards}
            self._gpu_uuids = {g.index: g.uuid for g in cards}
        self.on_settled = on_settled
        self.worker_id = worker_id or node_id()
        self.running: dict[int, Running] = {}
        self.workers = WorkerPool(
            settings.scheduler.start_method, settings.scheduler.prestart_workers,
            settings.models.keep_warm_seconds, release=self._release,
        )
        self._lock = threading.Lock()
        self._last_renew = 0.0
        self._stopping = False

    # ---- the job -------------------------------------------------------------------------
    def tick(self) -> None:
        if not self._lock.acquire(blocking=False):
            return  # the previous tick is still running; APScheduler will call again
        try:
            self._collect()
            self._renew()
            if not self._stopping:
                self._dispatch()
                self.workers.prestart(busy=bool(self.running))
        finally:
            self._lock.release()

    def wait_for_workers(self, timeout: float) -> bool:
        """Block until a running worker sends a message or a finished one exits (True), or
        until `timeout` or wake() (False). Called from the runner's own thread; tick() then
        does the work, under its lock."""
        return self.workers.wait([run.proc for run in list(self.running.values())], timeout)

    def wake(self) -> None:
        """Make wait_for_workers() look again: a worker started, or the service is stopping."""
        self.workers.wake()

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
            self.vram.reserve(claimed.id, gpu, estimate)
            runtime = self.planner.runtime_s(claimed, self._gpu_names.get(gpu, ""))
            self._start(claimed, gpu, estimate, self.clock.now() + timedelta(seconds=runtime))

    def _feed_warm(self) -> None:
        """A warm worker takes the next pending file of its model, on its GPU."""
        warm_workers = self.workers.warm
        if not warm_workers:
            return
        ready = self.queue.ready(limit=50)
        for warm in warm_workers:
            task = next((t for t in ready if t.model == warm.model
                         and self._kind(t) == warm.kind), None)
            if task is None or not warm.worker.process.is_alive():
                continue
            device = "cpu" if warm.gpu is None else f"cuda:{warm.gpu}"
            claimed = self.queue.claim(
                task.id, self.worker_id, self.settings.scheduler.lease_seconds,
                device=device, vram_estimate_mb=warm.mb or None,
            )
            ready.remove(task)
            if claimed is None:
                continue
            worker = self.workers.take_warm(warm)
            self._release(warm.key)  # its memory moves to the task
            if self.vram is not None and warm.gpu is not None:
                self.vram.reserve(claimed.id, warm.gpu, warm.mb)
                self.vram.materialise(claimed.id)
            end = None
            if self.planner is not None and warm.gpu is not None:
                runtime = self.planner.runtime_s(claimed, self._gpu_names.get(warm.gpu, ""))
                end = self.clock.now() + timedelta(seconds=runtime)
            self._start(claimed, warm.gpu, warm.mb, end, warm=worker)

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

    def _start(
        self,
        task: Task,
        gpu: int | None,
        estimate_mb: int = 0,
        expected_end: datetime | None = None,
        warm: Worker | None = None,
    ) -> None:
        """Send a claimed task's job to `warm`, a spare or a new worker; a task that cannot
        start is failed (its memory released) and the service goes on."""
        simulated = self.vram is not None and self.vram.backend.simulated
        card = None if simulated else gpu  # a simulated card is the CPU to the worker
        try:
            job = jobs.job_for(self.settings, self.queue, task, card,
                               None if card is None else self._gpu_uuids.get(card))
        except ValueError as err:  # an unsafe path, bad options, a path too long
            self._failed(task.id, *jobs.refusal(err), retryable=False)
            self._release(task.id)
            if warm is not None:
                self.workers.dismiss(warm)
            return
        worker = warm or self.workers.take()
        try:
            worker.conn.send(job)
        except (OSError, EOFError) as err:
            reason = self.workers.lost(worker)  # it died: did it say why?
            self._release(task.id)
            if reason is not None:  # it could not start: the pool backs off, say why
                self._failed(task.id, "worker_start", reason, retryable=True, resource=True)
                return
            log.warning("worker could not take task %s (%s); requeueing", task.id, err)
            worker.process.kill()
            self.queue.requeue(task.id, self.worker_id, "worker failed to start")
            return
        self.running[task.id] = Running(task, worker, gpu, estimate_mb, expected_end)
        self.wake()
        log.info("task %s loading %s on %s: %s", task.id, task.model, task.device, task.source)

    # ---- following work ----------------------------------------------------------------------
    def _collect(self) -> None:
        for task_id, run in list(self.running.items()):
            alive = run.proc.process.is_alive()  # before draining: a Done sent just before
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
                self.workers.retire(run.proc, task_id)
        self.workers.reap()

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
        """The task's memory becomes the warm worker's, under a key that is no task id."""
        key = -(run.proc.process.pid or task_id)
        self._release(task_id)
        if self.vram is not None and run.gpu is not None:
            self.vram.reserve(key, run.gpu, run.estimate_mb)
            self.vram.materialise(key)
        self.workers.keep_warm(Warm(run.proc, run.task.model, run.gpu, run.estimate_mb, key,
                                    kind=self._kind(run.task)))

    def _handle(self, run: Running, msg: FromWorker) -> None:
        """One message from a busy worker: the task's progress and outcome into the queue."""
        tid = run.task.id
        self.workers.observe(run.proc, msg, task_id=tid)  # Ready, Log, StartupError
        match msg:
            case StartupError(reason=reason):
                run.done = True
                # Not the file's fault: requeued without an attempt, a few times (then spent).
                self._failed(tid, "worker_start", reason, retryable=True, resource=True)
            case Loaded(load_seconds=seconds):
                if self.vram is not None:
                    self.vram.materialise(tid)
                self.queue.start_processing(tid, self.worker_id, seconds)
                log.info("task %s processing (model loaded in %.1f s)", tid, seconds)
            case Progress(fraction=fraction):
                self.queue.set_progress(tid, self.worker_id, fraction)
            case Done():
                self._completed(run, msg)
            case Error():
                run.done = True
                if msg.resource and self.calibration is not None and run.gpu is not None:
                    new = self.calibration.out_of_memory(
                        self._gpu_names[run.gpu], run.task.model, **self._kind(run.task))
                    log.warning("task %s ran out of GPU memory: %s estimate raised to %d MiB",
                                tid, run.task.model, new)
                self._failed(tid, msg.kind, msg.message, retryable=msg.retryable,
                             resource=msg.resource)

    def _completed(self, run: Running, done: Done) -> None:
        tid = run.task.id
        task = self.queue.complete(
            tid, self.worker_id,
            transcribe_seconds=done.transcribe_seconds,
            audio_seconds=done.audio_seconds or run.task.audio_seconds,
            detected_language=done.detected_language,
            outputs=list(done.outputs), vram_peak_mb=done.vram_peak_mb,
            sha256=done.sha256, diarize_seconds=done.diarize_seconds,
            **minutes.wanted(self.settings),
        )
        run.done = run.ok = True
        self._learn(run, done)
        if task is not None:
            log.info("task %s completed in %.1f s: %s", tid, time.monotonic() - run.started,
                     run.task.source)
            self.on_settled(task)

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

    def _release(self, key: int) -> None:
        """Return the VRAM reserved under a task id (or a warm worker's key)."""
        if self.vram is not None:
            self.vram.release(key)

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
            self.workers.stop_all(busy=[r.proc for r in runs.values()])
            for task_id, run in runs.items():
                outcome.discard_partial(self.settings, run.task)
                self._release(task_id)
            self.running.clear()

    def idle(self) -> bool:
        """No task runs and no finished worker still holds memory (warm ones may)."""
        return not self.running and not self.workers.settling()

    def running_summary(self) -> list[dict]:
        return [
            {"task": tid, "source": r.task.source, "model": r.task.model, "gpu": r.gpu,
             "seconds": round(time.monotonic() - r.started, 1)}
            for tid, r in self.running.items()
        ]
