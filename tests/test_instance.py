"""One service per settings/database on a machine; several machines on PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from service.config import load_settings
from service.instance import AlreadyRunning, InstanceLock
from service.runner import Service
from tests.conftest import write_settings
from tests.speech import wait_for
from tests.svc import REPO, app

QUIET = {"gpu": {"devices": "none"}, "http": {"enabled": False},
         "scheduler": {"prestart_workers": 0}, "models": {"default": "tiny.en"}}


def test_a_second_service_on_the_same_settings_refuses_naming_the_first(tmp_path: Path) -> None:
    path = write_settings(tmp_path / "svc", QUIET)
    first = Service(load_settings(path), backend=None)
    first.start()
    try:
        out = app(path, "run", timeout=120)
        assert out.returncode == 1, out.stderr
        assert f"already running (pid {os.getpid()})" in out.stderr
        assert "Traceback" not in out.stderr
        # refused before it opened the log file (this in-process first one keeps none)
        assert not (first.settings.logs / "dropscribe.log").exists()
    finally:
        first.stop()
    second = Service(load_settings(path), backend=None)  # released at stop: starts again
    second.start()
    second.stop()


def test_two_settings_files_on_one_sqlite_database_refuse_too(tmp_path: Path) -> None:
    url = f"sqlite:///{(tmp_path / 'shared.db').as_posix()}"
    a = load_settings(write_settings(tmp_path / "a", {**QUIET, "database": {"url": url}}))
    b = load_settings(write_settings(tmp_path / "b", {**QUIET, "database": {"url": url}}))
    held = InstanceLock(a)
    try:
        with pytest.raises(AlreadyRunning, match=r"already running \(pid \d+\)"):
            InstanceLock(b)
    finally:
        held.release()
    InstanceLock(b).release()


def test_a_killed_service_leaves_no_stale_lock(tmp_path: Path) -> None:
    """An operating-system lock: kill -9 (a power cut) frees it, the next start works."""
    path = write_settings(tmp_path / "svc", QUIET)
    code = ("import sys, time; from service.config import load_settings; "
            "from service.instance import InstanceLock; "
            f"held = InstanceLock(load_settings({str(path)!r})); print('held', flush=True); "
            "time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(AlreadyRunning, match=f"pid {holder.pid}"):
            InstanceLock(load_settings(path))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    wait_for(lambda: InstanceLock(load_settings(path)).release() is None, timeout=10)


def test_machines_sharing_postgresql_each_start(tmp_path: Path, pg_url: str) -> None:
    """Each machine has its own logs folder; the database has no file to lock."""
    nodes = [load_settings(write_settings(tmp_path / n, {**QUIET, "database": {"url": pg_url},
                                                        "paths": {"logs": str(tmp_path / n)}}))
             for n in ("node1", "node2")]
    services = [Service(s, backend=None) for s in nodes]
    try:
        for service in services:
            service.start()
    finally:
        for service in services:
            service.stop()
