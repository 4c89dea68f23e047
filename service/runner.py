"""The service loop: wire the parts together, start them, stop them cleanly.

Used the same way by `python app.py`, the Windows service and the systemd unit.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import psutil
from apscheduler.schedulers.background import BackgroundScheduler

from . import catalog, db, files, fsops, gpu, minutes, outcome, status
from .calibration import Calibration
from .clock import Clock, SystemClock
from .config import Settings
from .instance import AlreadyRunning, InstanceLock
from .pool import worker_context
from .scheduler import Dispatcher, node_id
from .tasks import TaskQueue
from .vram import VramPool
from .watcher import InboxWatcher

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
INTEGRITY_SECONDS = 60.0  # how often maintenance runs the database's quick_check
SETTLE_RETRY_SECONDS = 60.0  # how often moves that failed (a file held open) are tried again
# A claim (a file under its hidden name while it is moved) older than this is a stopped node's:
# no move of ours takes an hour, even a copy of a long recording to another disk.
CLAIM_STALE_SECONDS = 3600.0


class StartError(RuntimeError):
    """The service cannot start; the message says why in plain words."""


def heartbeat_path(settings: Settings) -> Path:
    return settings.logs / "service-status.json"


def prepare(settings: Settings) -> None:
    """Create the folders and check what settings.yaml names, before anything else runs: one
    line naming the key (StartError) instead of a traceback hours later."""
    folders = [("paths.inbox", settings.inbox), ("paths.outbox", settings.outbox),
               ("paths.archive", settings.archive), ("paths.failed", settings.failed),
               ("paths.logs", settings.logs), ("models.dir", settings.models_dir)]
    for key, folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StartError(f"{key}: {folder} cannot be used as a folder ({err.strerror or err}"
                             "; is a file in the way?)") from None
        if not folder.is_dir():
            raise StartError(f"{key}: {folder} is a file, not a folder")
    try:
        worker_context(settings.scheduler.start_method)
    except ValueError as err:
        raise StartError(str(err)) from None
    name = settings.models.default
    if name not in catalog.OFFICIAL and name not in catalog.local_models(settings.models_dir):
        local = catalog.local_models(settings.models_dir)
        there = ", ".join(local) if local else "none"
        raise StartError(
            f"models.default: {name!r} is neither an official model name "
            f"({', '.join(sorted(catalog.OFFICIAL))}) nor a model in models.dir "
            f"({settings.models_dir}; models there: {there})")


class Service:
    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        backend: gpu.GpuBackend | None | str = "auto",
        instance_lock: InstanceLock | None = None,
    ) -> None:
        self.settings = settings
        self._instance = instance_lock  # cli takes it before the log file opens
        self.clock = clock or SystemClock()
        if backend == "auto":
            backend = gpu.detect(settings.gpu.devices, settings.gpu.simulate)
        self.backend = backend
        self.worker_id = node_id()
        self.queue: TaskQueue | None = None
        self.scheduler: BackgroundScheduler | None = None
        self._stop = threading.Event()
        self._closing = threading.Event()
        self._started_at = datetime.now()
        self._storage: list[str] = []
        self._last_integrity = 0.0
        self._last_settle = 0.0
        self._last_claims = 0.0

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Refuse a second service on these settings/database, then start everything."""
        prepare(self.settings)
        if self._instance is None:
            try:
                self._instance = InstanceLock(self.settings)
            except AlreadyRunning as err:
                raise StartError(str(err)) from None
        try:
            self._start()
        except BaseException:
            self._instance.release()
            raise

    def _start(self) -> None:
        cfg = self.settings
        url = cfg.database_url
        db.migrate(url)
        problem = db.integrity_problem(url)
        if problem:  # refuse to start: every new file would fail while /health said ok
            raise StartError(f"{problem}; restore it from a backup, or move it away to start "
                             "with an empty task history")
        self.queue = TaskQueue(db.make_engine(url), self.clock, cfg.ui_language)
        recovered = self.queue.reap_expired(
            cfg.scheduler.backoff_seconds, dead_workers=self._dead_local_workers()
        )
        for task in recovered:
            log.warning("task %s recovered after an unclean stop -> %s", task.id, task.status)
            outcome.discard_partial(cfg, task)
        # files a stop left half-moved get their names back first, so settling finds them;
        # on SQLite no other node can be moving one now (one service per database)
        self._recover_claims(None if db.is_sqlite(url) else time.time() - CLAIM_STALE_SECONDS)
        for task in self.queue.unsettled():  # includes failed tasks just recovered above
            outcome.settle(cfg, self.queue, task)
        self._last_settle = time.monotonic()
        self.calibration = Calibration(
            self.queue.engine, self.clock, confidence_factor=cfg.gpu.confidence_factor,
            k=cfg.gpu.calibration_k, window=cfg.gpu.calibration_samples,
        )
        vram = None
        if self.backend is not None:
            vram = VramPool(self.backend, cfg.gpu, self.calibration.estimate_mb)
        self.dispatcher = Dispatcher(
            cfg, self.queue, self.clock, vram, self._settled, self.worker_id, self.calibration
        )
        self.watcher = InboxWatcher(cfg, self.queue, self.clock, on_rejected=self._settled)
        self.watcher.start()
        self.watcher.rescan()  # files that arrived while the service was down
        sched = BackgroundScheduler(daemon=True, timezone="UTC")
        common = dict(max_instances=1, coalesce=True, misfire_grace_time=None)
        sched.add_job(self._tick, "interval", seconds=cfg.scheduler.interval_seconds,
                      id="dispatch", next_run_time=datetime.now(), **common)
        sched.add_job(self.watcher.rescan, "interval", seconds=cfg.watcher.rescan_seconds,
                      id="rescan", **common)
        sched.add_job(self._maintain, "interval", seconds=HEARTBEAT_SECONDS, id="maintenance",
                      next_run_time=datetime.now(), **common)
        sched.start()
        self.scheduler = sched
        # Minutes from the user's LLM server: their own thread, never in transcription's way.
        self.minutes = minutes.Minutes(cfg, self.queue, self.clock, self.worker_id)
        if cfg.summary.enabled:
            self.minutes.start()
        self._waker = threading.Thread(target=self._wake_loop, daemon=True, name="dispatch-wake")
        self._waker.start()
        mode = "CPU" if self.backend is None else f"{len(self.backend.devices())} GPU(s)"
        log.info("DropScribe started (%s, worker id %s); inbox %s", mode, self.worker_id, cfg.inbox)
        if cfg.http.enabled:  # /health, /metrics and the status page; never fatal
            from .web import WebServer

            try:
                self.web = WebServer(cfg, self)
                self.web.start()
            except Exception:  # noqa: BLE001 - the service runs on without the endpoint
                log.exception("HTTP endpoint not started (settings http.*)")
                self.web = None
        self._maintain()  # heartbeat at once, so `status` sees the service and its HTTP port

    def _dead_local_workers(self) -> set[str]:
        """Worker ids of this host whose process is gone: a crash left their tasks running.
        (A second service on the same host keeps its tasks: its pid is alive.)"""
        host = self.worker_id.rsplit(":", 1)[0]
        dead = set()
        for wid in self.queue.active_workers():
            w_host, _, pid = wid.rpartition(":")
            if w_host == host and pid.isdigit() and not psutil.pid_exists(int(pid)):
                dead.add(wid)
        return dead

    def _tick(self) -> None:
        try:
            self.watcher.check()
            self.dispatcher.tick()
        except Exception:  # noqa: BLE001 - the service keeps running; the next tick retries
            log.exception("dispatch tick failed")

    def _wake_loop(self) -> None:
        """Tick as soon as a worker reports or exits, not at the next interval: after a short
        file the next one would otherwise wait up to `scheduler.interval_seconds` to start."""
        interval = self.settings.scheduler.interval_seconds
        while not self._closing.is_set():
            try:
                if self.dispatcher.wait_for_workers(interval) and not self._closing.is_set():
                    self.dispatcher.tick()
                    time.sleep(0.01)  # a worker mid-exit may look ready for a moment: no spin
            except Exception:  # noqa: BLE001 - the periodic tick still runs; keep waking
                log.exception("dispatch wake-up failed")
                time.sleep(interval)

    def _maintain(self) -> None:
        try:
            self.watcher.ensure_alive()
            assert self.queue is not None
            for task in self.queue.reap_expired(self.settings.scheduler.backoff_seconds):
                log.warning("task %s lease expired -> %s", task.id, task.status)
                outcome.discard_partial(self.settings, task)
                if task.status == "failed":
                    self._settled(task)
            self._settle_leftovers()
            self._check_storage()
            self._heartbeat()
        except Exception:  # noqa: BLE001
            log.exception("maintenance failed")

    def _settle_leftovers(self) -> None:
        """Sources whose move to archive/ or failed/ failed (a player, a sync client or an
        antivirus scan held them longer than fsops' retries) are moved again, every
        SETTLE_RETRY_SECONDS, not only at the next start. Only tasks settled a while ago:
        the dispatcher may be settling a fresh one right now."""
        if time.monotonic() - self._last_settle < SETTLE_RETRY_SECONDS:
            return
        self._last_settle = time.monotonic()
        assert self.queue is not None
        cutoff = self.clock.now() - timedelta(seconds=SETTLE_RETRY_SECONDS)
        if time.monotonic() - self._last_claims >= CLAIM_STALE_SECONDS:
            self._recover_claims(time.time() - CLAIM_STALE_SECONDS)  # a node that stopped
        for task in self.queue.unsettled(finished_before=cutoff):
            log.info("task %s: moving %s again", task.id, task.source)
            outcome.settle(self.settings, self.queue, task)

    def _recover_claims(self, claimed_before: float | None) -> None:
        """Half-moved files (a node stopped mid-move) get their names back (files.py)."""
        self._last_claims = time.monotonic()
        cfg = self.settings
        try:
            files.recover_claims([cfg.inbox, cfg.archive, cfg.failed], claimed_before)
        except OSError as err:  # a folder gone: storage checks report it
            log.error("could not look for half-moved files: %s", err)

    def _check_storage(self) -> None:
        """Inbox and database still there and sound? (/health reports storage_problems())."""
        problems = []
        if not self.settings.inbox.is_dir():
            problems.append(f"inbox: the folder {self.settings.inbox} is missing")
        url = self.settings.database_url
        sqlite = self.settings.sqlite_path
        if sqlite is not None and not sqlite.is_file():
            problems.append(f"database: the file {sqlite} is missing")
        elif time.monotonic() - self._last_integrity >= INTEGRITY_SECONDS or self._storage:
            self._last_integrity = time.monotonic()
            problem = db.integrity_problem(url)
            if problem:
                problems.append(f"database: {problem}")
        for problem in problems:
            if problem not in self._storage:
                log.error("%s", problem)
        self._storage = problems

    def storage_problems(self) -> list[str]:
        return list(self._storage)

    def _settled(self, task) -> None:  # noqa: ANN001
        assert self.queue is not None
        outcome.settle(self.settings, self.queue, task)

    def _heartbeat(self) -> None:
        """A small JSON file `status` reads: is the service alive, what runs, the GPUs."""
        # status.live reads the running tasks safely from this (maintenance) thread.
        data = {**status.live(self), "heartbeat": time.time()}
        fsops.atomic_write(heartbeat_path(self.settings),
                           json.dumps(data, ensure_ascii=False).encode("utf-8"))

    def stop(self) -> None:
        """Stop taking work, stop the workers, requeue their tasks (no attempt spent)."""
        web, self.web = getattr(self, "web", None), None
        if web is not None:
            web.stop()
        self._closing.set()
        if getattr(self, "minutes", None) is not None:
            self.minutes.stop()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=True)
            self.scheduler = None
        waker = getattr(self, "_waker", None)
        if waker is not None:
            self.dispatcher.wake()
            waker.join(timeout=10)
        if hasattr(self, "watcher"):
            self.watcher.stop()
        if hasattr(self, "dispatcher"):
            self.dispatcher.shutdown()
        try:
            heartbeat_path(self.settings).unlink(missing_ok=True)
        except OSError:
            pass
        if self._instance is not None:
            self._instance.release()
        log.info("DropScribe stopped")
        self._stop.set()

    def request_stop(self) -> None:
        self._stop.set()

    def run_forever(self) -> None:
        """Run until request_stop() (Ctrl-C, SIGTERM, the Windows service manager)."""
        self.start()
        try:
            while not self._stop.wait(0.5):
                pass
        finally:
            self.stop()


def run_foreground(settings: Settings) -> int:
    """`python app.py` and `service debug` on Linux: the service in this console until Ctrl-C
    (or SIGTERM, SIGHUP, Ctrl-Break), which stops it cleanly. Lives here, not in cli, so the
    Windows/systemd module needs no import of the command line (no cli ↔ winservice cycle)."""
    from . import logs

    try:
        prepare(settings)  # folders and models.default, before the log file needs its folder
    except StartError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:  # before the log file opens: a second service must not write into the first's log
        lock = InstanceLock(settings)
    except AlreadyRunning as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    logs.setup(settings.logs, console=True)
    service = Service(settings, instance_lock=lock)

    def _stop(signum, _frame):  # noqa: ANN001
        log.info("stop requested (signal %s)", signum)
        service.request_stop()

    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK"):  # SIGHUP: a closed terminal or
        if hasattr(signal, name):                            # ssh session; SIGBREAK: Windows
            signal.signal(getattr(signal, name), _stop)
    try:
        service.run_forever()
    except StartError as err:
        log.error("DropScribe cannot start: %s", err)
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
