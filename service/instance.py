"""One service per settings and database on a machine.

Two services on one SQLite file (or one settings file) would share the log file, double the
CPU limit and race each other's start-up recovery. The lock is an operating-system lock
(flock / LockFileEx through `filelock`), so a crashed service (kill -9, power cut) never
leaves a stale one behind. Several *machines* on one PostgreSQL database stay allowed: the
locks are local files (the logs folder is per machine; a PostgreSQL database has no file).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from filelock import FileLock, Timeout

from .config import Settings

log = logging.getLogger(__name__)

LOCK_NAME = "dropscribe.lock"


class AlreadyRunning(RuntimeError):
    """Another service holds this settings' lock; the message names its pid."""


def lock_paths(settings: Settings) -> list[Path]:
    """The logs folder's lock (same settings, or one log file), and the SQLite file's."""
    paths = [settings.logs / LOCK_NAME]
    if settings.sqlite_path is not None:
        paths.append(settings.sqlite_path.with_name(settings.sqlite_path.name + ".lock"))
    return paths


def _owner(lock: Path) -> str:
    try:
        return lock.with_name(lock.name + ".pid").read_text(encoding="utf-8").strip() or "?"
    except OSError:
        return "?"


class InstanceLock:
    """Held from start to stop; `release()` is safe to call twice."""

    def __init__(self, settings: Settings) -> None:
        self._held: list[FileLock] = []
        try:
            for path in lock_paths(settings):
                path.parent.mkdir(parents=True, exist_ok=True)
                lock = FileLock(path, timeout=0, thread_local=False, fallback_to_soft=False)
                try:
                    lock.acquire()
                except Timeout:
                    raise AlreadyRunning(
                        f"DropScribe is already running (pid {_owner(path)}) with these settings "
                        f"or this database ({path}); stop it first, or give this one its own "
                        "paths.logs and database") from None
                except OSError as err:  # a file system without locks: run, but say so
                    log.warning("cannot lock %s (%s): a second service would not be noticed",
                                path, err)
                    continue
                self._held.append(lock)
                path.with_name(path.name + ".pid").write_text(str(os.getpid()), encoding="utf-8")
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        while self._held:
            lock = self._held.pop()
            try:
                Path(lock.lock_file).with_name(Path(lock.lock_file).name + ".pid").unlink(
                    missing_ok=True)
            except OSError:
                pass
            lock.release()
