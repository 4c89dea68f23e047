"""Property-based: no sequence of queue operations reaches an illegal state or loses a task."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from service import db
from service.clock import ManualClock
from service.tables import ALL_STATES, FINAL_STATES, OPEN_STATES
from service.tasks import NewTask, TaskQueue

WORKERS = ["a:1", "b:2"]
LEGAL = {
    None: {"pending", "failed"},
    "pending": {"loading", "cancelled", "failed"},
    "loading": {"processing", "pending", "failed", "cancelled"},
    "processing": {"completed", "pending", "failed", "cancelled"},
    "failed": {"pending"},
    "cancelled": {"pending"},
    "completed": set(),
}


_TEMPLATE = tempfile.TemporaryDirectory()


def _fresh_db(folder: str) -> str:
    """A migrated database per example, copied from one migrated template (fast)."""
    template = Path(_TEMPLATE.name, "template.db")
    if not template.exists():
        db.migrate(f"sqlite:///{template.as_posix()}")
    target = Path(folder, "q.db")
    shutil.copy(template, target)
    return f"sqlite:///{target.as_posix()}"


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        url = _fresh_db(self.dir.name)
        self.clock = ManualClock()
        self.q = TaskQueue(db.make_engine(url), self.clock)
        self.ids: set[int] = set()

    def teardown(self) -> None:
        self.q.engine.dispose()
        self.dir.cleanup()

    def _some(self, data, status=None):  # noqa: ANN001, ANN202
        rows = [t for t in self.q.list(limit=1000) if status is None or t.status in status]
        return data.draw(st.sampled_from(rows)) if rows else None

    @rule(name=st.sampled_from(["a.mp3", "b.mp3", "c/d.wav"]), bad=st.booleans())
    def enqueue(self, name: str, bad: bool) -> None:
        t = self.q.enqueue(NewTask(source=name, size=1, mtime_ns=1, model="tiny", max_attempts=2),
                           failed=("not_audio", "no") if bad else None)
        if t is not None:
            self.ids.add(t.id)

    @rule(data=st.data(), worker=st.sampled_from(WORKERS))
    def claim(self, data, worker: str) -> None:  # noqa: ANN001
        t = self._some(data)
        if t is not None:
            self.q.claim(t.id, worker, 30)

    @rule(data=st.data(), worker=st.sampled_from(WORKERS))
    def start(self, data, worker: str) -> None:  # noqa: ANN001
        t = self._some(data)
        if t is not None:
            self.q.start_processing(t.id, worker, 1.0)

    @rule(data=st.data(), worker=st.sampled_from(WORKERS))
    def complete(self, data, worker: str) -> None:  # noqa: ANN001
        t = self._some(data)
        if t is not None:
            self.q.complete(t.id, worker, transcribe_seconds=1.0)

    @rule(data=st.data(), worker=st.sampled_from(WORKERS), retryable=st.booleans(),
          resource=st.booleans())
    def fail(self, data, worker: str, retryable: bool, resource: bool) -> None:  # noqa: ANN001
        t = self._some(data)
        if t is not None:
            self.q.fail(t.id, worker, "error", "x", retryable=retryable, resource=resource,
                        backoff_seconds=10)

    @rule(data=st.data(), worker=st.sampled_from(WORKERS))
    def requeue(self, data, worker: str) -> None:  # noqa: ANN001
        t = self._some(data)
        if t is not None:
            self.q.requeue(t.id, worker, "stop")

    @rule(data=st.data())
    def cancel_or_retry(self, data) -> None:  # noqa: ANN001
        t = self._some(data)
        if t is not None:
            (self.q.cancel if t.status in OPEN_STATES else self.q.retry)(t.id)

    @rule(seconds=st.integers(0, 100))
    def time_passes_and_leases_expire(self, seconds: int) -> None:
        self.clock.advance(seconds)
        self.q.reap_expired(10)

    @invariant()
    def no_task_is_lost_and_every_state_is_legal(self) -> None:
        rows = self.q.list(limit=1000)
        assert {t.id for t in rows} == self.ids
        open_sources = [t.source for t in rows if t.status in OPEN_STATES]
        assert len(open_sources) == len(set(open_sources))  # one open task per file
        for t in rows:
            assert t.status in ALL_STATES
            assert t.attempts <= t.max_attempts
            if t.status in ("loading", "processing"):
                assert t.worker_id and t.lease_expires_at
            if t.status in FINAL_STATES:
                assert t.finished_at is not None
            events = self.q.events(t.id)
            assert events[-1].to_status == t.status
            for e in events:
                if e.from_status is not None or e is events[0]:
                    assert e.to_status in LEGAL[e.from_status] or e.from_status is None


QueueMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestQueueStateMachine = QueueMachine.TestCase
