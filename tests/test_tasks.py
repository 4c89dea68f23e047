"""The queue's state machine on a real SQLite file and on a real PostgreSQL server (tests/pg.py)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import IntegrityError

from service import db
from service.tables import COMPLETED, FAILED, LOADING, PENDING, PROCESSING, Task
from service.tasks import MAX_CRASH_RETRIES, MAX_RESOURCE_RETRIES, NewTask, TaskQueue
from tests.conftest import BOTH_BACKENDS, run_together

pytestmark = BOTH_BACKENDS


def new(source: str = "a.mp3", **kw) -> NewTask:
    return NewTask(source=source, size=kw.pop("size", 100), mtime_ns=kw.pop("mtime_ns", 1),
                   model=kw.pop("model", "tiny.en"), **kw)


def test_enqueue_is_idempotent_for_the_same_file(queue: TaskQueue) -> None:
    first = queue.enqueue(new())
    assert first is not None and first.status == PENDING
    assert queue.enqueue(new()) is None
    assert queue.enqueue(new(size=200)) is None  # same path while still open: one task
    assert queue.counts()[PENDING] == 1


def test_full_run_writes_one_event_per_transition(queue: TaskQueue) -> None:
    t = queue.enqueue(new())
    assert queue.claim(t.id, "h:1", 60, device="cpu").status == LOADING
    assert queue.claim(t.id, "h:2", 60) is None  # compare-and-set: the second claim loses
    assert queue.start_processing(t.id, "h:1", 0.7).status == PROCESSING
    queue.set_progress(t.id, "h:1", 0.5)
    assert queue.get(t.id).progress == 0.5
    done = queue.complete(t.id, "h:1", transcribe_seconds=2.0, outputs=["x.txt"])
    assert done.status == COMPLETED and done.load_seconds == 0.7 and done.finished_at
    steps = [(e.from_status, e.to_status) for e in queue.events(t.id)]
    assert steps == [(None, PENDING), (PENDING, LOADING), (LOADING, PROCESSING),
                     (PROCESSING, COMPLETED)]


def test_only_the_claiming_worker_may_move_a_task(queue: TaskQueue) -> None:
    t = queue.enqueue(new())
    queue.claim(t.id, "h:1", 60)
    assert queue.start_processing(t.id, "other:9", 1.0) is None
    assert queue.get(t.id).status == LOADING


def test_retries_back_off_exponentially_then_fail(queue: TaskQueue, clock) -> None:
    t = queue.enqueue(new(max_attempts=3))
    waits = []
    for attempt in range(1, 4):
        clock.advance(10_000)
        assert queue.claim(t.id, "h:1", 60) is not None
        row = queue.fail(t.id, "h:1", "error", "boom", retryable=True, backoff_seconds=30)
        assert row.attempts == attempt
        if attempt < 3:
            assert row.status == PENDING
            waits.append((row.next_attempt_at - clock.now()).total_seconds())
            assert queue.ready() == []  # not before the backoff has passed
        else:
            assert row.status == FAILED and row.error_message == "boom"
    assert waits == [30, 60]


def test_non_retryable_failure_is_final_at_once(queue: TaskQueue) -> None:
    t = queue.enqueue(new())
    queue.claim(t.id, "h:1", 60)
    row = queue.fail(t.id, "h:1", "not_audio", "no audio", retryable=False, backoff_seconds=30)
    assert row.status == FAILED and row.attempts == 1


def test_resource_errors_do_not_spend_attempts_but_are_bounded(queue: TaskQueue, clock) -> None:
    t = queue.enqueue(new(max_attempts=2))
    statuses = []
    for _ in range(MAX_RESOURCE_RETRIES + 2):
        clock.advance(1000)
        if queue.claim(t.id, "h:1", 60) is None:
            break
        row = queue.fail(t.id, "h:1", "out_of_memory", "oom", retryable=True,
                         backoff_seconds=1, resource=True)
        statuses.append((row.status, row.attempts, row.resource_retries))
    assert statuses[:MAX_RESOURCE_RETRIES] == [
        (PENDING, 0, n) for n in range(1, MAX_RESOURCE_RETRIES + 1)]  # no attempt spent
    assert statuses[-1][0] == FAILED  # cannot loop forever
    assert len(statuses) <= MAX_RESOURCE_RETRIES + 2


def test_priority_then_age(queue: TaskQueue, clock) -> None:
    a = queue.enqueue(new("a.mp3"))
    clock.advance(1)
    b = queue.enqueue(new("b.mp3", priority=5))
    clock.advance(1)
    c = queue.enqueue(new("c.mp3"))
    assert [t.id for t in queue.ready()] == [b.id, a.id, c.id]
    assert queue.claim_next("h:1", 60).id == b.id


def test_requeue_on_shutdown_spends_no_attempt(queue: TaskQueue) -> None:
    t = queue.enqueue(new())
    queue.claim(t.id, "h:1", 60)
    queue.start_processing(t.id, "h:1", 1.0)
    row = queue.requeue(t.id, "h:1", "service stopped")
    assert row.status == PENDING and row.attempts == 0


def test_expired_leases_are_reaped_without_spending_an_attempt(queue: TaskQueue, clock) -> None:
    t = queue.enqueue(new())
    queue.claim(t.id, "h:1", 60)
    assert queue.reap_expired(30) == []
    clock.advance(61)
    [row] = queue.reap_expired(30)
    assert row.status == PENDING and row.error_kind == "interrupted"
    assert (row.attempts, row.crash_retries) == (0, 1)  # its node died, not the file
    assert [r.id for r in queue.ready()] == [t.id]  # at once, no backoff


def test_service_crashes_do_not_spend_attempts_but_are_bounded(queue: TaskQueue) -> None:
    t = queue.enqueue(new(max_attempts=2))
    seen = []
    for _ in range(MAX_CRASH_RETRIES + 3):
        if queue.claim(t.id, "host:1", 60) is None:
            break
        [row] = queue.reap_expired(30, dead_workers={"host:1"})
        seen.append((row.status, row.attempts, row.crash_retries))
        queue.update_fields(t.id, next_attempt_at=None)  # skip the backoff of spent attempts
    assert seen[:MAX_CRASH_RETRIES] == [(PENDING, 0, n) for n in range(1, MAX_CRASH_RETRIES + 1)]
    assert seen[MAX_CRASH_RETRIES:] == [(PENDING, 1, MAX_CRASH_RETRIES),
                                        (FAILED, 2, MAX_CRASH_RETRIES)]  # a file that kills
    assert queue.retry(t.id).crash_retries == 0  # the service each time still ends


def test_a_worker_dying_alone_spends_an_attempt(queue: TaskQueue) -> None:
    t = queue.enqueue(new())
    queue.claim(t.id, "h:1", 60)
    row = queue.fail(t.id, "h:1", "worker_crashed", "exit code -9", retryable=True,
                     backoff_seconds=1)
    assert (row.status, row.attempts, row.crash_retries) == (PENDING, 1, 0)


def test_start_up_reaps_only_the_dead_workers_of_this_host(queue: TaskQueue) -> None:
    mine = queue.enqueue(new("dead.mp3"))
    other = queue.enqueue(new("alive.mp3"))
    queue.claim(mine.id, "host:111", 60)
    queue.claim(other.id, "host:222", 60)
    assert queue.active_workers() == {"host:111", "host:222"}
    [row] = queue.reap_expired(30, dead_workers={"host:111"})  # leases still fresh
    assert row.id == mine.id and row.status == PENDING
    assert queue.get(other.id).status == LOADING


def test_cancel_and_retry(queue: TaskQueue) -> None:
    t = queue.enqueue(new())
    assert queue.cancel(t.id).status == "cancelled"
    assert queue.cancel(t.id) is None
    assert queue.retry(t.id).status == PENDING


def test_active_lists_what_any_node_is_working_on(queue: TaskQueue) -> None:
    a, b, c = (queue.enqueue(new(f"{n}.mp3")).id for n in "abc")
    queue.claim(a, "node1:1", 60)
    queue.claim(b, "node2:1", 60)
    queue.start_processing(b, "node2:1", 0.1)
    queue.claim(c, "node1:1", 60)
    queue.fail(c, "node1:1", "error", "x", retryable=False, backoff_seconds=0)
    assert sorted((t.id, t.status) for t in queue.active()) == [(a, LOADING), (b, PROCESSING)]


def test_rejected_file_is_recorded_as_failed(queue: TaskQueue) -> None:
    t = queue.enqueue(new("x.mp3"), failed=("not_audio", "This is not audio."))
    assert t.status == FAILED and t.error_message == "This is not audio."
    assert queue.ready() == []


def test_finished_file_left_in_inbox_is_not_enqueued_again(queue: TaskQueue) -> None:
    t = queue.enqueue(new())
    queue.claim(t.id, "h", 60)
    queue.start_processing(t.id, "h", 0)
    queue.complete(t.id, "h")
    assert queue.enqueue(new()) is None  # its move to archive/ did not happen: no loop
    queue.set_source_state(t.id, "archived")
    assert queue.enqueue(new()) is not None  # the same name dropped again later: new task


def test_the_open_task_index_decides_a_race_to_enqueue(queue: TaskQueue, monkeypatch) -> None:
    """Two nodes both saw the file as new (the SELECT in _known raced): the partial unique index
    uq_tasks_open_source lets one insert win and the other gets None, not an error."""
    first = queue.enqueue(new())
    monkeypatch.setattr(TaskQueue, "_known", staticmethod(lambda s, n: False))
    assert queue.enqueue(new()) is None
    assert queue.counts()[PENDING] == 1
    queue.cancel(first.id)  # the index covers open tasks only
    assert queue.enqueue(new()) is not None


def test_other_integrity_errors_are_not_taken_for_a_duplicate(queue: TaskQueue) -> None:
    """A row copied in with its id leaves PostgreSQL's id sequence behind: enqueue must fail
    loudly, not drop the file as 'already known'."""
    with queue.engine.begin() as conn:
        conn.execute(insert(Task).values(
            id=1, source="old.mp3", size=1, mtime_ns=1, model="tiny.en", task="transcribe",
            priority=0, options={}, status=COMPLETED, attempts=0, resource_retries=0,
            max_attempts=3, progress=1.0, created_at=datetime(2025, 1, 1), source_state="archived",
        ))
    if queue.engine.dialect.name == "postgresql":
        with pytest.raises(IntegrityError, match="tasks_pkey"):
            queue.enqueue(new("b.mp3"))
        with queue.engine.begin() as conn:  # the repair after copying rows in (README)
            conn.execute(text("SELECT setval(pg_get_serial_sequence('tasks', 'id'), "
                              "(SELECT max(id) FROM tasks))"))
    assert queue.enqueue(new("b.mp3")).id == 2


def _enqueuer(url: str, go, out) -> None:  # noqa: ANN001
    q = TaskQueue(db.make_engine(url))
    go.wait()
    out.put([t.id for i in range(100) if (t := q.enqueue(new(f"f{i}.mp3"))) is not None])


def test_four_processes_enqueue_each_file_once(db_url: str) -> None:
    """Every node's watcher sees every inbox file: one task per file, no errors."""
    made = [tid for ids in run_together(_enqueuer, [(db_url,)] * 4) for tid in ids]
    q = TaskQueue(db.make_engine(db_url))
    rows = q.list(limit=1000)
    assert len(made) == len(rows) == 100 and len({r.source for r in rows}) == 100
    q.engine.dispose()


def _claimer(url: str, worker: str, go, out) -> None:  # noqa: ANN001
    q = TaskQueue(db.make_engine(url))
    go.wait()
    got = []
    while (t := q.claim_next(worker, 60)) is not None:
        got.append(t.id)
    out.put(got)


def test_eight_processes_claim_each_task_exactly_once(db_url: str) -> None:
    """claim_next from 8 processes at once: BEGIN IMMEDIATE on SQLite, FOR UPDATE SKIP LOCKED
    on PostgreSQL (DESIGN.md §4)."""
    url = db_url
    q = TaskQueue(db.make_engine(url))
    for i in range(400):
        q.enqueue(new(f"f{i}.mp3"))
    results = run_together(_claimer, [(url, f"h:{i}") for i in range(8)])
    claimed = [tid for ids in results for tid in ids]
    counts = Counter(claimed)
    assert len(claimed) == 400 and max(counts.values()) == 1
    assert q.counts()[LOADING] == 400


def test_one_log_line_per_state_change_in_the_ui_language(db_url: str, caplog) -> None:
    from service import i18n

    q = TaskQueue(db.make_engine(db_url), lang="zh-CN")
    with caplog.at_level("INFO", logger="service.tasks"):
        t = q.enqueue(new("会议 记录.mp3"))
        q.claim(t.id, "h:1", 60)
    lines = [r.getMessage() for r in caplog.records if r.name == "service.tasks"]
    assert lines == [
        f"任务 {t.id} {i18n.state_name(PENDING, 'zh-CN')}：会议 记录.mp3",
        f"任务 {t.id} {i18n.state_name(LOADING, 'zh-CN')}：会议 记录.mp3",
    ]
    q.engine.dispose()


def test_a_stop_requeues_every_running_task_in_one_go(queue: TaskQueue) -> None:
    ids = [queue.enqueue(new(f"{n}.mp3")).id for n in "abcd"]
    for tid in ids[:3]:
        queue.claim(tid, "h:1", 60)
    queue.start_processing(ids[0], "h:1", 1.0)
    queue.claim(ids[3], "other:2", 60)  # another node's task is never touched
    assert sorted(queue.requeue_all(ids, "h:1", "service stopped")) == ids[:3]
    assert [queue.get(t).status for t in ids] == [PENDING, PENDING, PENDING, LOADING]
    assert all(queue.get(t).attempts == 0 for t in ids)
    assert [e.detail for e in queue.events(ids[0])][-1] == "service stopped"
    assert queue.requeue_all([], "h:1", "service stopped") == []
