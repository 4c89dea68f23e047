"""Pytest plugin: run the real service as a child process (`python app.py`).

Fixtures: `models_dir` (tiny.en imported with the real CLI, once per session), `service`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError, ProgrammingError

from service import db
from service.config import load_settings
from service.runner import heartbeat_path
from service.tasks import TaskQueue
from tests.conftest import write_settings
from tests.speech import wait_for

REPO = Path(__file__).resolve().parents[1]


def app(settings: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a CLI command the way a user would."""
    return subprocess.run(
        [sys.executable, str(REPO / "app.py"), "--settings", str(settings), *args],
        capture_output=True, text=True, encoding="utf-8", timeout=timeout, cwd="/",
    )


class ServiceProcess:
    """`python app.py --settings <path>`, its console output in <settings folder>/service.out."""

    def __init__(self, settings_path: Path, env: dict[str, str] | None = None) -> None:
        self.settings_path = settings_path
        self.settings = load_settings(settings_path)
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8", **(env or {}))
        self.log = open(settings_path.parent / "service.out", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "app.py"), "--settings", str(settings_path)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd="/",
        )
        self.worker_id = f"{socket.gethostname()}:{self.proc.pid}"  # scheduler.node_id()
        if self.settings.sqlite_path is not None:  # a PostgreSQL database exists beforehand
            wait_for(lambda: self.settings.sqlite_path.exists(), timeout=60)
        self.queue = TaskQueue(db.make_engine(self.settings.database_url))

    def started(self) -> bool:
        """Up and running: its first heartbeat is written (it dies → the test fails here)."""
        assert self.proc.poll() is None, self.output()[-3000:]
        return heartbeat_path(self.settings).is_file()

    def running(self) -> bool:
        """Its own heartbeat is written (not one left by an earlier, killed service)."""
        if not self.started():
            return False
        try:
            data = json.loads(heartbeat_path(self.settings).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return data.get("pid") == self.proc.pid

    def output(self) -> str:
        return (self.settings_path.parent / "service.out").read_text("utf-8", errors="replace")

    def tasks(self) -> list:
        """The task rows; none while the starting service has not created its tables yet
        (the SQLite file appears before the migration has run)."""
        try:
            return self.queue.list(limit=1000)
        except (OperationalError, ProgrammingError) as err:
            if "no such table" in str(err) or "does not exist" in str(err):
                return []
            raise

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self.queue.engine.dispose()
        return self.proc.returncode


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_en_source: Path) -> Path:
    """tiny.en imported with the real CLI (the conversion a user without internet would run)."""
    folder = tmp_path_factory.mktemp("models")
    settings = write_settings(folder / "cfg", {"models": {"dir": str(folder)}})
    result = app(settings, "models", "import", str(tiny_en_source), "--name", "tiny.en")
    assert result.returncode == 0, result.stderr
    assert (folder / "tiny.en.pt").is_file()
    listing = app(settings, "models", "list")
    assert "tiny.en" in listing.stdout
    return folder


# .ci/run runs the service and scheduler tests once more with workers started the Windows way
# (DROPSCRIBE_TEST_START_METHOD=spawn); unset, the service's own default (auto) applies.
START_METHOD = os.environ.get("DROPSCRIBE_TEST_START_METHOD", "auto")


def service_settings(tmp_path: Path, models_dir: Path, **extra: dict) -> Path:
    data = {
        "models": {"dir": str(models_dir), "default": "tiny.en", "allow_download": False},
        "watcher": {"stable_seconds": 1.0, "rescan_seconds": 5},
        "scheduler": {"interval_seconds": 0.5, "backoff_seconds": 1, "progress_seconds": 0.5,
                      "start_method": START_METHOD},
        "gpu": {"devices": "none"},
        "http": {"port": 0},
    }
    for key, value in extra.items():
        data.setdefault(key, {}).update(value)
    return write_settings(tmp_path / "svc", data)


@pytest.fixture
def service(tmp_path: Path, models_dir: Path):
    svc = ServiceProcess(service_settings(tmp_path, models_dir))
    yield svc
    code = svc.stop()
    assert code == 0, svc.output()[-3000:]
