"""Inbox watcher: file events are hints, the periodic rescan is the truth.

A candidate becomes a task only after its size and mtime stayed the same for
`watcher.stable_seconds` (a file still being copied is never started early, never dropped).
Then it is probed (is it audio? how long?) and enqueued — or recorded as failed with a plain
reason. Exceptions never stop the watching: they are logged and the next tick goes on.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from . import audio, catalog
from .clock import Clock
from .config import Settings
from .files import rel_source, sidecar_of
from .sidecar import SidecarError, read_sidecar
from .tables import Task
from .tasks import NewTask, TaskQueue

log = logging.getLogger(__name__)


@dataclass
class _Candidate:
    size: int
    mtime_ns: int
    since: datetime


class _Hints(FileSystemEventHandler):
    """Turns watchdog events into candidate paths; never raises into the observer thread."""

    def __init__(self, watcher: InboxWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            if event.is_directory:
                if event.event_type in ("created", "moved"):
                    self.watcher.request_rescan()
                return
            path = getattr(event, "dest_path", "") or event.src_path
            if event.event_type in ("created", "modified", "moved", "closed"):
                self.watcher.hint(Path(os.fsdecode(path)))
        except Exception:  # noqa: BLE001 - a bad event must not kill the observer
            log.exception("error handling file event %r", event)


class InboxWatcher:
    def __init__(
        self,
        settings: Settings,
        queue: TaskQueue,
        clock: Clock,
        on_rejected: Callable[[Task], None] | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.clock = clock
        self.inbox = settings.inbox
        self.on_rejected = on_rejected or (lambda task: None)
        self._lock = threading.Lock()
        self._candidates: dict[Path, _Candidate | None] = {}
        self._admitted: dict[Path, tuple[int, int]] = {}
        self._rescan_wanted = threading.Event()
        self._observer: Observer | None = None

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self.inbox.mkdir(parents=True, exist_ok=True)
        observer_cls = PollingObserver if self.settings.watcher.polling else Observer
        self._observer = observer_cls(timeout=1.0)
        self._observer.schedule(_Hints(self), str(self.inbox), recursive=True)
        self._observer.daemon = True
        self._observer.start()
        log.info("watching %s (%s)", self.inbox, observer_cls.__name__)

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)

    def alive(self) -> bool:
        return self._observer is not None and self._observer.is_alive()

    def ensure_alive(self) -> None:
        """Restart a dead observer (it can die on a vanished network share)."""
        if self._observer is not None and not self._observer.is_alive():
            log.warning("the folder watcher stopped; restarting it")
            self.start()
            self.request_rescan()

    # ---- inputs --------------------------------------------------------------------------
    def eligible(self, path: Path) -> bool:
        """An audio/video file by extension, not matching an ignore pattern in any part."""
        try:
            rel_parts = path.relative_to(self.inbox).parts
        except ValueError:
            return False
        if not rel_parts or path.suffix.lower() not in audio.AUDIO_EXTENSIONS:
            return False
        patterns = self.settings.watcher.ignore
        return not any(fnmatch.fnmatch(part, pat) for part in rel_parts for pat in patterns)

    def hint(self, path: Path) -> None:
        if self.eligible(path):
            with self._lock:
                self._candidates.setdefault(path, None)

    def request_rescan(self) -> None:
        self._rescan_wanted.set()

    def rescan(self) -> int:
        """Walk the whole inbox; every eligible file not yet admitted becomes a candidate."""
        self._rescan_wanted.clear()
        found = 0
        for root, dirs, files in os.walk(self.inbox, followlinks=False):
            dirs[:] = [d for d in dirs if self.eligible_dir(Path(root) / d)]
            for name in files:
                path = Path(root) / name
                if self.eligible(path):
                    self.hint(path)
                found += 1
        with self._lock:  # forget files that left the inbox
            for gone in [p for p in self._admitted if not p.exists()]:
                del self._admitted[gone]
        return found

    def eligible_dir(self, path: Path) -> bool:
        patterns = self.settings.watcher.ignore
        return not path.is_symlink() and not any(fnmatch.fnmatch(path.name, p) for p in patterns)

    # ---- the stability tick ----------------------------------------------------------------
    def check(self) -> list[Task]:
        """Admit every candidate that has been stable long enough. Called by the scheduler."""
        if self._rescan_wanted.is_set():
            self.rescan()
        now = self.clock.now()
        stable_for = self.settings.watcher.stable_seconds
        with self._lock:
            items = list(self._candidates.items())
        admitted: list[Task] = []
        for path, seen in items:
            try:
                st = path.stat()
            except OSError:
                self._forget(path)  # gone (moved away or deleted by the user): nothing to do
                continue
            key = (st.st_size, st.st_mtime_ns)
            if self._admitted.get(path) == key:
                self._forget(path)
                continue
            if seen is None or (seen.size, seen.mtime_ns) != key:
                with self._lock:
                    self._candidates[path] = _Candidate(st.st_size, st.st_mtime_ns, now)
                continue
            # An empty file is usually a copy that has not started writing yet: wait longer.
            wait = stable_for if st.st_size > 0 else max(5 * stable_for, 5.0)
            if (now - seen.since).total_seconds() < wait:
                continue
            self._forget(path)
            try:
                task = self.admit(path, st.st_size, st.st_mtime_ns)
            except Exception:  # noqa: BLE001 - one bad file must not stop the others
                log.exception("could not record %s; will look again at the next rescan", path)
                continue
            self._admitted[path] = key
            if task is not None:
                admitted.append(task)
        return admitted

    def _forget(self, path: Path) -> None:
        with self._lock:
            self._candidates.pop(path, None)

    def pending_candidates(self) -> int:
        with self._lock:
            return len(self._candidates)

    # ---- admission -------------------------------------------------------------------------
    def admit(self, path: Path, size: int, mtime_ns: int) -> Task | None:
        """Probe a stable file and record it: pending, or failed with a plain reason."""
        rel = rel_source(self.inbox, path)
        if path.is_symlink() and not self._inside_inbox(path):
            log.warning("ignoring %s: it links outside the inbox", path)
            return None
        if self.queue.is_known(rel, size, mtime_ns):
            return None
        cfg = self.settings
        known = catalog.known_models(cfg.models_dir)
        new = dict(
            source=rel, size=size, mtime_ns=mtime_ns, model=self._folder_model(rel, known),
            language=cfg.transcribe.language, task=cfg.transcribe.task,
            max_attempts=cfg.scheduler.max_attempts,
        )
        failure: tuple[str, str] | None = None
        options: dict = {}
        side = sidecar_of(path)
        if side.is_file():
            try:
                sc = read_sidecar(side, known)
            except SidecarError as err:
                failure = ("bad_sidecar", str(err))
            else:
                for key in ("model", "language", "task"):
                    if getattr(sc, key):
                        new[key] = getattr(sc, key)
                new["priority"] = sc.priority
                options.update(sc.decoding)  # chinese_script, glossary, beam_size, …
                if sc.output_formats:
                    options["output_formats"] = list(sc.output_formats)
        if failure is None:
            try:
                info = audio.probe(path)
            except audio.NotAudioError as err:
                failure = ("not_audio", str(err))
            else:
                new["audio_seconds"] = info.duration_s
                if info.duration_s > cfg.transcribe.max_audio_seconds:
                    failure = (
                        "too_long",
                        f"The audio is {info.duration_s / 3600:.1f} hours long; the limit is "
                        f"{cfg.transcribe.max_audio_seconds / 3600:.1f} hours "
                        "(transcribe.max_audio_seconds in settings.yaml).",
                    )
        task = self.queue.enqueue(NewTask(options=options, **new), failed=failure)
        if task is not None and failure is not None:
            log.warning("%s cannot be transcribed: %s", rel, failure[1])
            self.on_rejected(task)
        return task

    def _inside_inbox(self, path: Path) -> bool:
        inbox_real = os.path.realpath(self.inbox)
        return os.path.commonpath([inbox_real, os.path.realpath(path)]) == inbox_real

    def _folder_model(self, rel: str, known: set[str]) -> str:
        """A first-level subfolder named after a model picks it (inbox/large-v3/x.mp3)."""
        parts = rel.split("/")
        if len(parts) > 1 and parts[0] in known:
            return parts[0]
        return self.settings.models.default
