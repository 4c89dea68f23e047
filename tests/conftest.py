"""Shared fixtures: real SQLite files, real settings files, real folders under tmp_path."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import yaml

from service import db
from service.clock import ManualClock
from service.config import Settings, load_settings
from service.tasks import TaskQueue

pytest_plugins = ["tests.fixtures_models", "tests.pg", "tests.svc", "tests.chat_server"]

# Backends a test module can run on: `pytestmark = BOTH_BACKENDS` runs its `db_url` and `queue`
# tests on SQLite and on a real PostgreSQL (tests/pg.py; skipped where it is not installed).
BACKENDS = ["sqlite", "postgresql"]
BOTH_BACKENDS = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


def run_together(target: Callable, args: Sequence[tuple], timeout: float = 120) -> list:
    """Races between nodes: one spawned process per `args` tuple, called as
    target(*args, go, out); each does its set-up, waits for `go` (set once all are started) and
    puts one result on `out`. Returns the results; fails if a process does not exit cleanly."""
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, go, out)) for a in args]
    for p in procs:
        p.start()
    go.set()
    results = [out.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return results


def write_settings(folder: Path, data: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "settings.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(write_settings(tmp_path, {"watcher": {"stable_seconds": 0.5}}))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database: a SQLite file, or (parametrised "postgresql") a fresh PostgreSQL
    database on the session's server."""
    backend = getattr(request, "param", "sqlite")
    if backend == "postgresql":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{(tmp_path / 'data' / 'tasks.db').as_posix()}"
    db.migrate(url)
    return url


@pytest.fixture
def queue(db_url: str, clock: ManualClock) -> TaskQueue:
    q = TaskQueue(db.make_engine(db_url), clock)
    yield q
    q.engine.dispose()
