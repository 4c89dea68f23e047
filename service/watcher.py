"""Inbox watcher: file events are hints, the periodic rescan is the truth.

A candidate becomes a task only after its size and mtime stayed the same for
`watcher.stable_seconds` (a file still being copied is never started early, never dropped).
Then it is probed (is it audio? how long?) and enqueued — or recorded as failed with a plain
reason. Every file seen ends as a row: a link, a name that is not UTF-8, a bad or blocking
sidecar, even an unexpected error while probing are recorded as failed with the reason (only a
database error waits for the next rescan). Exceptions never stop the watching.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import stat
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from . import audio, catalog, fsops, i18n, reasons
from .clock import Clock
from .config import Settings
from .files import has_sidecar, moved_rel, rel_source, sidecar_of
from .sidecar import SidecarError, read_sidecar
from .tables import Task
from .tasks import NewTask, TaskQueue

log = logging.getLogger(__name__)


class _NotYet(Exception):
    """Admission must wait: an open task holds an older version of the same file name."""


class _Held(Exception):
    """The file cannot be read yet: another program holds it (or we may not open it)."""


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
        opener: fsops.Opener | None = None,
    ) -> None:
        self.settings = settings
        self.opener = opener  # the exclusive-open probe (fsops.held_elsewhere); tests inject it
        self._held: dict[Path, datetime] = {}  # files another program holds: since when
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
        with self._lock:  # the dispatch thread adds to _admitted: iterate a copy
            admitted = list(self._admitted)
        gone = [p for p in admitted if not os.path.lexists(p)]
        with self._lock:  # forget files that left the inbox
            for p in gone:
                self._admitted.pop(p, None)
        return found

    def eligible_dir(self, path: Path) -> bool:
        patterns = self.settings.watcher.ignore
        if path.is_symlink() or any(fnmatch.fnmatch(path.name, p) for p in patterns):
            return False
        # Our own folders are never watched, however the inbox was given (through a link).
        cfg = self.settings
        return not any(
            fsops.same_or_inside(path, folder) for folder in (cfg.outbox, cfg.archive, cfg.failed)
        )

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
                st = path.lstat()
            except OSError:
                self._forget(path)  # gone (moved away or deleted by the user): nothing to do
                continue
            key = (st.st_size, st.st_mtime_ns)
            with self._lock:
                already = self._admitted.get(path) == key
            if already:
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
            try:
                if stat.S_ISREG(st.st_mode):
                    problem = fsops.held_elsewhere(path, self.opener)
                    if problem is not None:
                        raise _Held(problem)
                self._forget(path)
                task = self.admit(path, st.st_size, st.st_mtime_ns)
            except _Held as held:
                task = self._wait_while_held(path, st, now, held)
                if task is None:
                    continue
            except _NotYet:
                self._forget(path)
                continue  # not marked admitted: the next rescan offers it again
            except Exception as err:  # noqa: BLE001 - one bad file must not stop the others
                self._forget(path)
                task = self._record_unexpected(path, st.st_size, st.st_mtime_ns, err)
                if task is None:
                    continue
            self._held.pop(path, None)
            with self._lock:
                self._admitted[path] = key
            if task is not None:
                admitted.append(task)
        return admitted

    def _wait_while_held(self, path: Path, st: os.stat_result, now: datetime,
                         held: _Held) -> Task | None:
        """Another program still holds the file (a copy stalled past stable_seconds, a sync
        client, an antivirus scan): not stable yet. Look again after another stability
        window; after `watcher.held_timeout_seconds` record it as failed, saying why."""
        since = self._held.setdefault(path, now)
        waited = (now - since).total_seconds()
        limit = self.settings.watcher.held_timeout_seconds
        if waited < limit:
            if waited == 0:
                log.info("%s is still open in another program (%s); waiting",
                         fsops.display(str(path)), held.args[0])
            with self._lock:
                self._candidates[path] = _Candidate(st.st_size, st.st_mtime_ns, now)
            return None
        self._forget(path)
        self._held.pop(path, None)
        rel = rel_source(self.inbox, path)
        if not fsops.storable(rel):
            return None
        reason = self._say("admit.held", error=self._detail(str(held.args[0])),
                           waited=i18n.duration(limit, self.settings.ui_language))
        return self._record(NewTask(source=rel, size=st.st_size, mtime_ns=st.st_mtime_ns,
                                    model=self.settings.models.default,
                                    max_attempts=self.settings.scheduler.max_attempts),
                            ("held", reason))

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
        if not fsops.storable(rel):
            return self._reject_name(path, rel, size, mtime_ns)
        if self.queue.is_known(rel, size, mtime_ns):
            if not self.queue.knows_version(rel, size, mtime_ns):
                # Another version of this name is still open (it was overwritten while being
                # transcribed): look again once that task has settled.
                raise _NotYet
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
        if path.is_symlink():  # the worker never reads through a link (it could point anywhere)
            failure = ("link", self._say("admit.link"))
        elif has_sidecar(path):
            side = sidecar_of(path)
            try:
                sc = read_sidecar(side, known)
                if sc.language and not catalog.known_language(sc.language):
                    raise SidecarError(
                        self._say("admit.language", file=side.name, language=sc.language)
                    )
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
            except (PermissionError, FileNotFoundError) as err:
                raise _Held(err) from None  # taken by another program between probe and open
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
        return self._record(NewTask(options=options, **new), failure)

    def _record(self, new: NewTask, failure: tuple[str, str] | None) -> Task | None:
        task = self.queue.enqueue(new, failed=failure)
        if task is not None and failure is not None:
            log.warning("%s cannot be transcribed: %s", fsops.display(new.source),
                        fsops.display(failure[1]))
            self.on_rejected(task)
        return task

    def _reject_name(self, path: Path, rel: str, size: int, mtime_ns: int) -> Task | None:
        """A name with bytes that are not UTF-8 cannot be stored or shown as it is: the file
        moves to failed/ under its escaped name (nothing is lost) and a failed row says why."""
        shown = fsops.display(rel)
        try:
            dest = fsops.move_no_overwrite(path, fsops.mirror_join(self.settings.failed, shown))
        except (OSError, ValueError) as err:
            log.error("cannot move %s to the failed folder: %s", shown, fsops.display(str(err)))
            return None
        side = sidecar_of(path)
        if os.path.lexists(side):
            fsops.move_no_overwrite(side, sidecar_of(dest))
        reason = self._say("admit.bad_name", moved=dest.relative_to(self.settings.failed))
        task = self.queue.enqueue(
            NewTask(source=shown, size=size, mtime_ns=mtime_ns,
                    model=self.settings.models.default, max_attempts=1),
            failed=("bad_name", reason), source_state="failed",
            moved_to=moved_rel(dest, self.settings.failed),
        )
        if task is not None:
            log.warning("%s cannot be transcribed: %s", shown, reason)
            self.on_rejected(task)
        return task

    def _record_unexpected(self, path: Path, size: int, mtime_ns: int,
                           err: Exception) -> Task | None:
        """Admission itself failed (a bug, an odd file system): the file still gets a failed
        row with the reason, so it is never silently retried forever. If even that fails (the
        database is broken), log it and look again at the next rescan."""
        shown = fsops.display(str(path))
        log.error("could not record %s: %s", shown,
                  fsops.display("".join(traceback.format_exception_only(err)).strip()))
        if isinstance(err, SQLAlchemyError):  # the database, not the file: look again later
            return None
        try:
            rel = rel_source(self.inbox, path)
            if not fsops.storable(rel):
                return None
            reason = self._say("admit.unexpected",
                               error=self._detail(f"{type(err).__name__}: {err}"))
            return self._record(
                NewTask(source=rel, size=size, mtime_ns=mtime_ns,
                        model=self.settings.models.default), ("unreadable", reason))
        except Exception as again:  # noqa: BLE001
            log.error("could not record %s as failed either (%s); will look again at the "
                      "next rescan", shown, fsops.display(f"{type(again).__name__}: {again}"))
            return None

    def _say(self, key: str, **kw: object) -> str:
        """A refusal reason in the user's language (English or Chinese, service/i18n.py)."""
        return i18n.t(key, self.settings.ui_language, **kw)

    def _detail(self, text: str) -> str:
        """An error's own words inside such a reason, in the user's language too (reasons)."""
        return reasons.detail(text, self.settings.ui_language)

    def _folder_model(self, rel: str, known: set[str]) -> str:
        """A first-level subfolder named after a model picks it (inbox/large-v3/x.mp3)."""
        parts = rel.split("/")
        if len(parts) > 1 and parts[0] in known:
            return parts[0]
        return self.settings.models.default
