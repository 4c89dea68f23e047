"""The worker pool with real worker processes (service.worker.main): spares, warm workers,
backoff after a failed start, reaping and the stop at shutdown. Time is an injected clock where
the pool reads it (idle and backoff), so nothing here waits for seconds to pass."""

from __future__ import annotations

import logging
import multiprocessing
import time
from pathlib import Path

import psutil
import pytest
import torch  # noqa: F401 - the parent's real torch, imported before a broken one is put first

from service.messages import Log, Ready, Stop
from service.pool import Warm, Worker, WorkerPool, worker_context
from tests.speech import wait_for
from tests.svc import START_METHOD
from tests.test_faults import BROKEN_TORCH


class Ticks:
    """The pool's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make_pool():
    """Pools whose workers are all gone after the test, also those a test took out of them."""
    before = {p.pid for p in multiprocessing.active_children()}
    made: list[WorkerPool] = []

    def make(method: str = START_METHOD, prestart: int = 0, keep_warm: float = 0.0,
             released: list | None = None, ticks: Ticks | None = None) -> WorkerPool:
        pool = WorkerPool(method, prestart, keep_warm,
                          release=(released if released is not None else []).append,
                          monotonic=ticks or Ticks())
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.stop_all(busy=[])
    for process in multiprocessing.active_children():
        if process.pid not in before:
            process.kill()
            process.join(timeout=10)


def settled(pool: WorkerPool) -> bool:
    """Reap, as each tick does; True once no finished worker is left to exit."""
    pool.reap()
    return not pool.settling()


def ready(worker: Worker) -> bool:
    """The worker's imports are done: after its log records, it says Ready."""
    while True:
        assert worker.conn.poll(120), "the worker never said it was ready"
        msg = worker.conn.recv()
        if not isinstance(msg, Log):
            return msg == Ready()


def test_the_start_method_is_the_setting_and_never_plain_fork() -> None:
    assert worker_context("spawn").get_start_method() == "spawn"
    posix = "forkserver" in multiprocessing.get_all_start_methods()  # not on Windows
    assert worker_context("auto").get_start_method() == ("forkserver" if posix else "spawn")
    if posix:
        assert worker_context("forkserver").get_start_method() == "forkserver"
    else:
        with pytest.raises(ValueError, match="forkserver is not available"):
            worker_context("forkserver")


def test_a_spare_is_started_ahead_and_taken_before_a_new_one(make_pool) -> None:
    pool = make_pool(prestart=1)
    pool.prestart(busy=False)
    [spare] = pool.spares
    assert pool.take() is spare and pool.spares == []
    assert ready(spare)  # it did its imports before it had a job
    other = pool.take()  # no spare left: a new process
    assert other.process.pid != spare.process.pid and ready(other)
    pool.stop_all(busy=[spare, other])
    assert not spare.process.is_alive() and not other.process.is_alive()


def test_no_spare_is_forked_while_a_task_runs_under_forkserver(make_pool) -> None:
    """A fork takes milliseconds then; a spawn takes seconds, so spares are kept regardless."""
    pool = make_pool(prestart=1)
    pool.prestart(busy=True)
    assert len(pool.spares) == (0 if pool.start_method == "forkserver" else 1)
    pool.prestart(busy=False)
    assert len(pool.spares) == 1


def test_a_dead_spare_is_replaced(make_pool) -> None:
    pool = make_pool(prestart=1)
    pool.prestart(busy=False)
    [first] = pool.spares
    assert ready(first)
    first.process.kill()
    wait_for(lambda: not first.process.is_alive(), timeout=30)
    pool.prestart(busy=False)
    [second] = pool.spares
    assert second.process.pid != first.process.pid and first.conn.closed
    assert ready(second)


def test_a_worker_that_cannot_start_says_why_once_and_the_next_waits_longer(
    make_pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken torch install (spawn: the child imports torch itself, from sys.path)."""
    broken = tmp_path / "broken"
    (broken / "torch").mkdir(parents=True)
    (broken / "torch" / "__init__.py").write_text(BROKEN_TORCH, encoding="utf-8")
    monkeypatch.syspath_prepend(str(broken))
    ticks = Ticks()
    pool = make_pool(method="spawn", prestart=1, ticks=ticks)
    caplog.set_level(logging.DEBUG, logger="service.pool")

    def spare_died() -> Worker:
        [spare] = pool.spares
        wait_for(lambda: not spare.process.is_alive(), timeout=120)
        return spare

    pool.prestart(busy=False)
    assert spare_died().process.exitcode == 1
    pool.prestart(busy=False)  # reads why, then waits 1 s before the next try
    assert pool.start_failures == 1 and pool.spares == []
    ticks.now += 0.5
    pool.prestart(busy=False)
    assert pool.spares == []
    ticks.now += 0.6
    pool.prestart(busy=False)
    spare_died()
    pool.prestart(busy=False)  # failed again: 2 s now
    assert pool.start_failures == 2 and pool.spares == []
    ticks.now += 1.5
    pool.prestart(busy=False)
    assert pool.spares == []
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "could not start" in errors[0].getMessage()
    assert "c10.dll" in errors[0].getMessage()
    # a worker taken for a task that dies the same way: the dispatcher learns why
    worker = pool.take()
    wait_for(lambda: not worker.process.is_alive(), timeout=120)
    assert "c10.dll" in pool.lost(worker) and worker.conn.closed
    assert pool.start_failures == 3
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1


def test_a_warm_worker_idle_past_its_time_is_stopped_and_its_memory_returned(
    make_pool,
) -> None:
    released: list[int] = []
    ticks = Ticks()
    pool = make_pool(keep_warm=5.0, released=released, ticks=ticks)
    worker = pool.take()
    assert ready(worker)
    pool.keep_warm(Warm(worker, "tiny.en", 0, 1228, key=-worker.process.pid))
    ticks.now += 15.0  # keep_warm_seconds + 10 is its limit: not yet past it
    pool.reap()
    assert [w.worker for w in pool.warm] == [worker] and released == []
    ticks.now += 0.1
    pool.reap()
    assert pool.warm == [] and pool.settling()
    wait_for(lambda: settled(pool), timeout=30)
    assert released == [-worker.process.pid] and not psutil.pid_exists(worker.process.pid)


def test_a_warm_worker_taken_for_a_task_is_no_longer_warm(make_pool) -> None:
    released: list[int] = []
    pool = make_pool(keep_warm=5.0, released=released)
    worker = pool.take()
    warm = Warm(worker, "tiny.en", None, 0, key=-1)
    pool.keep_warm(warm)
    assert pool.take_warm(warm) is worker and pool.warm == []
    pool.reap()
    assert released == [] and worker.process.is_alive()


def test_a_finished_workers_memory_is_returned_only_once_it_has_exited(make_pool) -> None:
    released: list[int] = []
    pool = make_pool(released=released)
    done, dismissed = pool.take(), pool.take()
    assert ready(done) and ready(dismissed)
    pool.retire(done, 5)
    pool.reap()
    assert released == [] and pool.settling()  # still alive: its memory is not back yet
    pool.dismiss(dismissed)  # told to leave; its memory was never the pool's to return
    done.conn.send(Stop())
    wait_for(lambda: settled(pool), timeout=30)
    assert released == [5]
    assert not done.process.is_alive() and not dismissed.process.is_alive()
    assert done.conn.closed and dismissed.conn.closed


def test_wait_returns_when_a_worker_speaks_or_exits_and_wake_cuts_it_short(make_pool) -> None:
    pool = make_pool(keep_warm=30.0)
    worker = pool.take()
    assert pool.wait([worker], timeout=120)  # it said something (a log record, Ready)
    assert ready(worker)
    pool.wake()
    started = time.monotonic()
    assert pool.wait([worker], timeout=120) is False  # nothing said: woken, not timed out
    assert time.monotonic() - started < 60
    pool.keep_warm(Warm(worker, "tiny.en", None, 0, key=-3))
    worker.conn.send(Stop())
    assert pool.wait([], timeout=120)  # the warm worker left
    wait_for(lambda: not worker.process.is_alive(), timeout=30)


def test_stop_all_ends_spares_warm_and_busy_workers_together(make_pool) -> None:
    pool = make_pool(prestart=2, keep_warm=30.0)
    pool.prestart(busy=False)
    busy, warm = pool.take(), pool.take()
    pool.keep_warm(Warm(warm, "tiny.en", None, 0, key=-2))
    pool.prestart(busy=False)
    everyone = [busy, warm, *pool.spares]
    assert len(everyone) == 4 and all(w.process.is_alive() for w in everyone)
    started = time.monotonic()
    pool.stop_all(busy=[busy])
    took = time.monotonic() - started
    assert not any(w.process.is_alive() for w in everyone)
    assert pool.spares == [] and pool.warm == [] and not pool.settling()
    assert took < 15, took
