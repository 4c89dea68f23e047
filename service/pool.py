"""The worker processes' lives: started ahead, kept warm, backed off, reaped, stopped.

Starting a worker costs ~1.5 s of Python, torch and whisper imports (milliseconds under
forkserver) and loading a model seconds more, so the pool keeps `prestart_workers` spares whose
imports are done and lets a worker that finished a file keep its model for
`models.keep_warm_seconds`. A worker whose imports fail (a broken torch install) is not
restarted in a loop: its reason is logged at ERROR once and the next spare waits longer.

The pool never reads the queue or the VRAM pool: the dispatcher (service/scheduler.py) decides
what a worker runs and what memory it holds, and asks the pool to `wait` on the workers between
its ticks (a message or an exit wakes it, so the next file starts at once). Memory a finished
worker held is handed back through `release(key)` only once its process has really exited —
exiting is what returns a card's VRAM.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess

from .messages import FromWorker, Log, Ready, StartupError, Stop
from .worker import PRELOAD
from .worker import main as worker_main

log = logging.getLogger(__name__)
worker_log = logging.getLogger("service.worker")  # worker records, relayed over their pipes

MAX_BACKOFF_S = 300.0  # between tries to start a worker that keeps failing to start


def worker_context(method: str = "auto") -> BaseContext:
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
class Worker:
    """One worker process and the parent's end of its pipe."""

    process: BaseProcess
    conn: Connection


@dataclass
class Warm:
    """A worker that finished a file and keeps its model loaded for the next one."""

    worker: Worker
    model: str
    gpu: int | None
    mb: int
    key: int  # its VRAM reservation's key (negative: not a task id)
    kind: dict[str, str] = field(default_factory=dict)  # engine and precision of its model
    idle_since: float = 0.0  # set by WorkerPool.keep_warm


class WorkerPool:
    """Spare, warm and exiting worker processes; the busy ones belong to the dispatcher."""

    def __init__(
        self,
        start_method: str,
        prestart: int,
        keep_warm_seconds: float,
        release: Callable[[int], None],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.context = worker_context(start_method)
        self.prestart_count = prestart
        self.keep_warm_seconds = keep_warm_seconds
        self._release = release  # returns the memory reserved under a key
        self._now = monotonic
        self._spares: list[Worker] = []
        self._warm: list[Warm] = []
        self._exiting: list[tuple[Worker, int | None]] = []  # VRAM keys freed once they exit
        self._start_errors: set[str] = set()  # reasons already logged at ERROR
        self.start_failures = 0  # in a row; a Ready resets it
        self._next_spawn = 0.0
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)  # see wake()

    @property
    def start_method(self) -> str:
        return self.context.get_start_method()

    @property
    def spares(self) -> list[Worker]:
        """The pre-started workers waiting for a job (a copy)."""
        return list(self._spares)

    # ---- starting ------------------------------------------------------------------------
    def take(self) -> Worker:
        """A live spare (its imports done) if there is one, else a new worker."""
        while self._spares:
            worker = self._spares.pop(0)
            if worker.process.is_alive():
                return worker
            self._drain(worker)
        return self._spawn()

    def prestart(self, busy: bool) -> None:
        """Replace dead spares and start new ones up to `prestart_workers`. Not while a task
        runs under forkserver (a fork takes milliseconds: don't compete for the CPU), nor
        during the pause after a worker failed to start."""
        alive = []
        for worker in self._spares:
            if worker.process.is_alive():
                alive.append(worker)
            else:
                self._drain(worker)
        self._spares = alive
        if busy and self.start_method == "forkserver":
            return
        if self._now() < self._next_spawn:
            return
        while len(self._spares) < self.prestart_count:
            self._spares.append(self._spawn())

    def _spawn(self) -> Worker:
        parent, child = self.context.Pipe()
        process = self.context.Process(
            target=worker_main, args=(child,), daemon=True, name="dropscribe-worker"
        )
        process.start()
        child.close()
        return Worker(process, parent)

    # ---- what any worker says about its own life ------------------------------------------
    def observe(self, worker: Worker, msg: FromWorker, task_id: int | None = None) -> None:
        """Ready, StartupError and Log, from a spare or a busy worker alike; others are the
        dispatcher's."""
        match msg:
            case Ready():
                self.start_failures = 0
            case StartupError(reason=reason):
                self._start_failed(reason)
            case Log(level=level, logger=name, text=text):
                where = f"task {task_id}" if task_id is not None else "spare"
                worker_log.log(level, "worker %s (%s) %s: %s", worker.process.pid, where, name,
                               text)

    def lost(self, worker: Worker) -> str | None:
        """A worker that could not take its job: wait for it, read what it said, close its
        pipe. Returns its StartupError's reason when it died because it could not start."""
        worker.process.join(timeout=5)
        return self._drain(worker)

    def _drain(self, worker: Worker) -> str | None:
        """What a worker said before it died (its log, why it could not start)."""
        reason = None
        try:
            while worker.conn.poll():
                msg = worker.conn.recv()
                self.observe(worker, msg)
                if isinstance(msg, StartupError):
                    reason = msg.reason
        except (EOFError, OSError):
            pass
        worker.conn.close()
        return reason

    def _start_failed(self, reason: str) -> None:
        """Say why at ERROR once per reason, and wait longer before starting the next spare
        (1 s, 2 s, 4 s … 5 min), not a spawn loop."""
        self.start_failures += 1
        delay = min(MAX_BACKOFF_S, 2.0 ** (self.start_failures - 1))
        self._next_spawn = self._now() + delay
        if reason not in self._start_errors:
            self._start_errors.add(reason)
            log.error("%s", reason)
        else:
            log.debug("worker start failed again (%d), next try in %.0f s",
                      self.start_failures, delay)

    # ---- warm workers ---------------------------------------------------------------------
    @property
    def warm(self) -> list[Warm]:
        """The warm workers, oldest first (a copy: the dispatcher claims while it iterates)."""
        return list(self._warm)

    def keep_warm(self, warm: Warm) -> None:
        """Its memory stays reserved under `warm.key` until it takes a file or leaves."""
        warm.idle_since = self._now()
        self._warm.append(warm)

    def take_warm(self, warm: Warm) -> Worker:
        """The warm worker now runs a task; the caller moves its memory to the task."""
        self._warm.remove(warm)
        return warm.worker

    # ---- ending ---------------------------------------------------------------------------
    def retire(self, worker: Worker, key: int | None) -> None:
        """A worker that is done (it exits by itself): release `key` once it has exited."""
        self._exiting.append((worker, key))

    def dismiss(self, worker: Worker) -> None:
        """Send a warm worker away (its next task could not start); its memory is already
        the dispatcher's to release."""
        self._exiting.append((worker, None))
        _ask_to_leave(worker)

    def reap(self) -> None:
        """Release the memory of workers that have really exited; stop warm workers idle
        past their time (they should have left by themselves)."""
        limit = self.keep_warm_seconds + 10
        for warm in list(self._warm):
            idle = self._now() - warm.idle_since
            if not warm.worker.process.is_alive() or idle > limit:
                self._warm.remove(warm)
                if warm.worker.process.is_alive():
                    warm.worker.process.kill()
                self._exiting.append((warm.worker, warm.key))
        still = []
        for worker, key in self._exiting:
            if worker.process.is_alive():
                still.append((worker, key))
                continue
            worker.process.join(timeout=0)
            worker.conn.close()
            if key is not None:
                self._release(key)
        self._exiting = still

    # ---- waiting ---------------------------------------------------------------------------
    def wait(self, busy: list[Worker], timeout: float) -> bool:
        """Block until a busy worker sends a message or any worker (busy, warm, finished)
        exits (True), or until `timeout` or wake() (False). Runs outside the dispatcher's
        lock, so a pipe it watches may be closed meanwhile: that counts as a change."""
        watched: list = [self._wake_r]
        for worker in busy:
            watched += [worker.conn, worker.process.sentinel]
        watched += [w.worker.process.sentinel for w in list(self._warm)]
        watched += [worker.process.sentinel for worker, _ in list(self._exiting)]
        try:
            ready = wait(watched, timeout)
        except (OSError, ValueError):
            return True
        if self._wake_r in ready:
            while self._wake_r.poll():
                self._wake_r.recv_bytes()
            ready.remove(self._wake_r)
        return bool(ready)

    def wake(self) -> None:
        """Make wait() look again: a worker started, or the service is stopping."""
        try:
            self._wake_w.send_bytes(b"")
        except OSError:
            pass

    def settling(self) -> bool:
        """A finished worker has not exited yet: its memory is not back."""
        return bool(self._exiting)

    def stop_all(self, busy: list[Worker]) -> None:
        """Shutdown: spares leave by themselves, every other worker (`busy` too) is killed at
        once, then all are waited for together (Windows allows seconds), not one by one."""
        for worker in self._spares:
            _ask_to_leave(worker)
        doomed = busy + [w.worker for w in self._warm] + [w for w, _ in self._exiting]
        for worker in doomed:
            worker.process.kill()
        deadline = time.monotonic() + 5  # real seconds, whatever clock was injected
        for worker in doomed + self._spares:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=1)
        self._warm.clear()
        self._exiting.clear()
        self._spares.clear()


def _ask_to_leave(worker: Worker) -> None:
    """Send Stop; a worker whose pipe is closed has left already, which is what was asked."""
    try:
        worker.conn.send(Stop())
    except OSError:
        pass
