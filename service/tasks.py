"""The task queue and its state machine.

    pending → loading → processing → completed
       ↑         │           │
       └─────────┴───────────┴──→ failed (after max_attempts) ; any open state → cancelled

Every transition is ONE compare-and-set `UPDATE … WHERE id=? AND status=? RETURNING` plus its
`task_events` row in the same transaction (BEGIN IMMEDIATE on SQLite, see db.py). A transition
that lost a race returns None instead of raising: the caller simply moves on.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import i18n
from .clock import Clock, SystemClock
from .db import session_factory
from .fsops import display
from .tables import (
    ACTIVE_STATES,
    ALL_STATES,
    CANCELLED,
    COMPLETED,
    FAILED,
    LOADING,
    OPEN_STATES,
    PENDING,
    PROCESSING,
    Task,
    TaskEvent,
)

log = logging.getLogger(__name__)

# A resource error (CUDA out of memory) requeues without spending an attempt, but only this often.
MAX_RESOURCE_RETRIES = 5
# A task found running after the *service* died (kill -9, power cut, forced reboot) or whose
# node stopped renewing its lease is requeued without spending an attempt, but only this often:
# a file that really brings the whole service down still ends.
MAX_CRASH_RETRIES = 10


@dataclass(frozen=True)
class NewTask:
    """What the watcher knows about a stable inbox file."""

    source: str  # relative to the inbox, '/' separated
    size: int
    mtime_ns: int
    model: str
    audio_seconds: float | None = None
    sha256: str | None = None
    language: str | None = None
    task: str = "transcribe"
    priority: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    max_attempts: int = 3


def _open_source_conflict(err: IntegrityError) -> bool:
    """The insert lost to the partial unique index uq_tasks_open_source (one open task per
    source), not some other constraint. SQLite names the column, PostgreSQL the index."""
    msg = str(err.orig)
    return "uq_tasks_open_source" in msg or "tasks.source" in msg


class TaskQueue:
    """Storage behind small verbs: enqueue, claim, start, complete, fail, requeue, cancel…"""

    def __init__(self, engine: Engine, clock: Clock | None = None, lang: str = "en") -> None:
        self.engine = engine
        self.clock = clock or SystemClock()
        self.lang = lang  # of the one log line per state change
        self._sessions = session_factory(engine)

    # ---- helpers -------------------------------------------------------------------------
    def _event(
        self,
        s: Session,
        task_id: int,
        frm: str | None,
        to: str,
        worker: str | None,
        detail: str | None,
    ) -> None:
        s.execute(
            insert(TaskEvent).values(
                task_id=task_id, from_status=frm, to_status=to, at=self.clock.now(),
                worker_id=worker, detail=detail,
            )
        )

    def _cas(
        self,
        task_id: int,
        frm: str | Sequence[str],
        to: str,
        *,
        worker: str | None = None,
        detail: str | None = None,
        only_worker: str | None = None,
        **values: Any,
    ) -> Task | None:
        """Compare-and-set one task from `frm` to `to`; None if someone else moved it first."""
        frm_states = (frm,) if isinstance(frm, str) else tuple(frm)
        cond = [Task.id == task_id, Task.status.in_(frm_states)]
        if only_worker is not None:
            cond.append(Task.worker_id == only_worker)
        with self._sessions.begin() as s:
            row = s.execute(
                update(Task).where(*cond).values(status=to, **values).returning(Task)
            ).scalar_one_or_none()
            if row is None:
                return None
            prev = frm_states[0] if len(frm_states) == 1 else None
            self._event(s, task_id, prev, to, worker, detail)
            s.flush()
            s.expunge(row)
        self._log_state(row)
        return row

    def _log_state(self, task: Task) -> None:
        level = logging.WARNING if task.status == FAILED else logging.INFO
        state = i18n.state_name(task.status, self.lang)
        log.log(level, i18n.t("task.state_log", self.lang, id=task.id, state=state,
                              file=display(task.source)))

    # ---- enqueue -------------------------------------------------------------------------
    def enqueue(self, new: NewTask, *, failed: tuple[str, str] | None = None,
                source_state: str = "inbox", moved_to: str | None = None) -> Task | None:
        """Record a file; None if it already has an open task (the same file seen again).

        `failed=(kind, message)` records a file that can never be processed (not audio, bad
        sidecar) directly as failed, so the user sees why in `status` and in SQL.
        `source_state` says where the file is when that is not the inbox (already moved to
        failed/, at `moved_to` there), in the same transaction, so no reader ever sees a row that
        points at a file no longer there.
        """
        now = self.clock.now()
        with self._sessions.begin() as s:
            if self._known(s, new):
                return None
            status = FAILED if failed else PENDING
            values = dict(
                source=new.source, size=new.size, mtime_ns=new.mtime_ns, sha256=new.sha256,
                audio_seconds=new.audio_seconds, model=new.model, language=new.language,
                task=new.task, priority=new.priority, options=new.options, status=status,
                attempts=1 if failed else 0, resource_retries=0, crash_retries=0,
                max_attempts=new.max_attempts,
                progress=0.0, created_at=now, source_state=source_state, moved_to=moved_to,
            )
            if failed:
                values.update(error_kind=failed[0], error_message=failed[1], finished_at=now)
            try:
                with s.begin_nested():
                    stmt = insert(Task).values(**values).returning(Task.id)
                    task_id = s.execute(stmt).scalar_one()
            except IntegrityError as err:
                if not _open_source_conflict(err):
                    raise  # e.g. a PostgreSQL id sequence behind rows copied in with their ids
                return None  # another node (or thread) enqueued the same file first
            self._event(s, task_id, None, status, None, failed[1] if failed else None)
            task = s.get(Task, task_id)
            s.flush()
            s.expunge(task)
        self._log_state(task)
        return task

    def is_known(self, source: str, size: int, mtime_ns: int) -> bool:
        """True if enqueue would ignore this file (so the watcher need not probe it again)."""
        with self._sessions() as s:
            return self._known(s, NewTask(source=source, size=size, mtime_ns=mtime_ns, model=""))

    def open_task_for(self, source: str) -> Task | None:
        """The open (pending or running) task of this inbox file name, if any."""
        with self._sessions() as s:
            task = s.scalars(select(Task).where(
                Task.source == source, Task.status.in_(OPEN_STATES)).limit(1)).first()
            if task is not None:
                s.expunge(task)
            return task

    def knows_version(self, source: str, size: int, mtime_ns: int) -> bool:
        """A task (open, or finished with the file still in the inbox) recorded exactly this
        version of the file; False when only another version of the same name is known."""
        with self._sessions() as s:
            stmt = select(Task.id).where(
                Task.source == source, Task.size == size, Task.mtime_ns == mtime_ns,
                or_(Task.status.in_(OPEN_STATES), Task.source_state == "inbox"),
            )
            return s.execute(stmt.limit(1)).first() is not None

    @staticmethod
    def _known(s: Session, new: NewTask) -> bool:
        """Open task for this path, or this exact file already finished but left in the inbox
        (its move to archive/ or failed/ did not happen: don't loop on it)."""
        stmt = select(Task.id).where(
            Task.source == new.source,
            or_(
                Task.status.in_(OPEN_STATES),
                and_(
                    Task.source_state == "inbox",
                    Task.size == new.size,
                    Task.mtime_ns == new.mtime_ns,
                ),
            ),
        )
        return s.execute(stmt.limit(1)).first() is not None

    # ---- claim ---------------------------------------------------------------------------
    def ready(self, limit: int = 100) -> list[Task]:
        """Pending tasks that may start now: highest priority first, then oldest."""
        now = self.clock.now()
        with self._sessions() as s:
            rows = s.scalars(
                select(Task)
                .where(
                    Task.status == PENDING,
                    or_(Task.next_attempt_at.is_(None), Task.next_attempt_at <= now),
                )
                .order_by(Task.priority.desc(), Task.created_at, Task.id)
                .limit(limit)
            ).all()
            s.expunge_all()
            return list(rows)

    def claim(
        self,
        task_id: int,
        worker_id: str,
        lease_seconds: float,
        *,
        device: str | None = None,
        vram_estimate_mb: int | None = None,
    ) -> Task | None:
        """pending → loading for one chosen task (the dispatcher picked it)."""
        now = self.clock.now()
        return self._cas(
            task_id, PENDING, LOADING, worker=worker_id, detail=device,
            worker_id=worker_id, lease_expires_at=now + timedelta(seconds=lease_seconds),
            claimed_at=now, loading_at=now, device=device, vram_estimate_mb=vram_estimate_mb,
            progress=0.0,
        )

    def claim_next(self, worker_id: str, lease_seconds: float) -> Task | None:
        """pending → loading for the best ready task, in a single UPDATE (no SELECT race)."""
        now = self.clock.now()
        pick = (
            select(Task.id)
            .where(
                Task.status == PENDING,
                or_(Task.next_attempt_at.is_(None), Task.next_attempt_at <= now),
            )
            .order_by(Task.priority.desc(), Task.created_at, Task.id)
            .limit(1)
        )
        if self.engine.dialect.name == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        with self._sessions.begin() as s:
            row = s.execute(
                update(Task)
                .where(Task.id == pick.scalar_subquery(), Task.status == PENDING)
                .values(
                    status=LOADING, worker_id=worker_id, claimed_at=now, loading_at=now,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                )
                .returning(Task)
            ).scalar_one_or_none()
            if row is None:
                return None
            self._event(s, row.id, PENDING, LOADING, worker_id, None)
            s.flush()
            s.expunge(row)
        self._log_state(row)
        return row

    # ---- progress through a run ------------------------------------------------------------
    def start_processing(self, task_id: int, worker_id: str, load_seconds: float) -> Task | None:
        return self._cas(
            task_id, LOADING, PROCESSING, worker=worker_id, only_worker=worker_id,
            processing_at=self.clock.now(), load_seconds=load_seconds,
        )

    def set_progress(self, task_id: int, worker_id: str, progress: float) -> None:
        with self._sessions.begin() as s:
            s.execute(
                update(Task)
                .where(Task.id == task_id, Task.status == PROCESSING, Task.worker_id == worker_id)
                .values(progress=max(0.0, min(1.0, progress)))
            )

    def renew_leases(self, worker_id: str, task_ids: Iterable[int], lease_seconds: float) -> int:
        ids = list(task_ids)
        if not ids:
            return 0
        until = self.clock.now() + timedelta(seconds=lease_seconds)
        with self._sessions.begin() as s:
            res = s.execute(
                update(Task)
                .where(Task.id.in_(ids), Task.worker_id == worker_id)
                .where(Task.status.in_(ACTIVE_STATES))
                .values(lease_expires_at=until)
            )
            return res.rowcount or 0

    def complete(self, task_id: int, worker_id: str, **results: Any) -> Task | None:
        """processing → completed with timings and output paths."""
        return self._cas(
            task_id, PROCESSING, COMPLETED, worker=worker_id, only_worker=worker_id,
            finished_at=self.clock.now(), progress=1.0, lease_expires_at=None,
            error_kind=None, error_message=None, **results,
        )

    def fail(
        self,
        task_id: int,
        worker_id: str | None,
        kind: str,
        message: str,
        *,
        retryable: bool,
        backoff_seconds: float,
        resource: bool = False,
        crash: bool = False,
    ) -> Task | None:
        """An attempt failed: back to pending with exponential backoff, or failed for good.

        `resource=True` (out of GPU memory) requeues without spending a normal attempt, at most
        MAX_RESOURCE_RETRIES times; `crash=True` (the service, not the file, died) likewise at
        once, at most MAX_CRASH_RETRIES times. Neither can loop forever.
        """
        with self._sessions() as s:
            task = s.get(Task, task_id)
            if task is None or task.status not in ACTIVE_STATES:
                return None  # only a running attempt can fail
            frm, attempts, rr = task.status, task.attempts, task.resource_retries
            cr, max_attempts = task.crash_retries, task.max_attempts
        if resource and rr < MAX_RESOURCE_RETRIES:
            rr += 1
            delay = min(backoff_seconds, 5.0) * rr
        elif crash and cr < MAX_CRASH_RETRIES:
            cr += 1
            delay = 0.0
        else:
            attempts += 1
            delay = backoff_seconds * 2 ** (attempts - 1)
        final = not retryable or attempts >= max_attempts
        now = self.clock.now()
        common = dict(
            worker=worker_id, detail=f"{kind}: {message}", attempts=attempts,
            resource_retries=rr, crash_retries=cr, error_kind=kind, error_message=message,
            lease_expires_at=None,
        )
        if worker_id is not None and frm in ACTIVE_STATES:
            common["only_worker"] = worker_id
        if final:
            return self._cas(task_id, frm, FAILED, finished_at=now, **common)
        return self._cas(
            task_id, frm, PENDING, next_attempt_at=now + timedelta(seconds=delay), progress=0.0,
            **common,
        )

    def requeue(self, task_id: int, worker_id: str, reason: str) -> Task | None:
        """Give a running task back without spending an attempt (clean shutdown)."""
        return self._cas(
            task_id, ACTIVE_STATES, PENDING, worker=worker_id, only_worker=worker_id,
            detail=reason, lease_expires_at=None, progress=0.0, next_attempt_at=None,
        )

    def requeue_all(self, task_ids: Iterable[int], worker_id: str, reason: str) -> list[int]:
        """Give back every running task of this node in ONE transaction (a stop, a Windows
        shutdown that allows seconds): all are pending again, or none is. Returns their ids."""
        ids = list(task_ids)
        if not ids:
            return []
        with self._sessions.begin() as s:
            rows = s.execute(
                update(Task)
                .where(Task.id.in_(ids), Task.status.in_(ACTIVE_STATES),
                       Task.worker_id == worker_id)
                .values(status=PENDING, lease_expires_at=None, progress=0.0,
                        next_attempt_at=None)
                .returning(Task.id, Task.source)
            ).all()
            for task_id, _source in rows:
                self._event(s, task_id, None, PENDING, worker_id, reason)
        for task_id, source in rows:
            log.info(i18n.t("task.state_log", self.lang, id=task_id,
                            state=i18n.state_name(PENDING, self.lang), file=display(source)))
        return [task_id for task_id, _source in rows]

    def reap_expired(
        self, backoff_seconds: float, *, dead_workers: Collection[str] = ()
    ) -> list[Task]:
        """Running tasks whose lease expired (their node stopped) or, at start-up, that this
        node left behind when it crashed go back to pending. Their service died, not their
        file: no attempt is spent (bounded by MAX_CRASH_RETRIES). A worker that dies while its
        service lives is the dispatcher's `worker_crashed`, which does spend one."""
        now = self.clock.now()
        cond = [Task.status.in_(ACTIVE_STATES)]
        if dead_workers:
            cond.append(or_(Task.lease_expires_at < now, Task.worker_id.in_(list(dead_workers))))
        else:
            cond.append(Task.lease_expires_at < now)
        with self._sessions() as s:
            stale = s.execute(select(Task.id, Task.worker_id).where(*cond)).all()
        out = []
        for task_id, worker in stale:
            t = self.fail(
                task_id, worker, "interrupted",
                "The transcription was interrupted (the service or its worker stopped "
                "unexpectedly).",
                retryable=True, backoff_seconds=backoff_seconds, crash=True,
            )
            if t is not None:
                out.append(t)
        return out

    # ---- user commands -------------------------------------------------------------------
    def cancel(self, task_id: int, reason: str = "cancelled by user") -> Task | None:
        return self._cas(
            task_id, OPEN_STATES, CANCELLED, detail=reason, finished_at=self.clock.now(),
            lease_expires_at=None,
        )

    def retry(self, task_id: int) -> Task | None:
        """failed/cancelled → pending with fresh attempts (the source must be back in place)."""
        return self._cas(
            task_id, (FAILED, CANCELLED), PENDING, detail="retry requested", attempts=0,
            resource_retries=0, crash_retries=0, next_attempt_at=None, finished_at=None,
            error_kind=None,
            error_message=None, progress=0.0,
        )

    def set_source_state(
        self, task_id: int, state: str, *, only_from: str | None = None, **values: Any
    ) -> bool:
        """Record where the source file is; with `only_from`, only if it still says that."""
        stmt = update(Task).where(Task.id == task_id)
        if only_from is not None:
            stmt = stmt.where(Task.source_state == only_from)
        with self._sessions.begin() as s:
            return s.execute(stmt.values(source_state=state, **values)).rowcount == 1

    def update_fields(self, task_id: int, **values: Any) -> None:
        with self._sessions.begin() as s:
            s.execute(update(Task).where(Task.id == task_id).values(**values))

    # ---- reading -------------------------------------------------------------------------
    def get(self, task_id: int) -> Task | None:
        with self._sessions() as s:
            task = s.get(Task, task_id)
            if task is not None:
                s.expunge(task)
            return task

    def list(self, status: str | None = None, limit: int = 50) -> list[Task]:
        with self._sessions() as s:
            stmt = select(Task).order_by(Task.id.desc()).limit(limit)
            if status:
                stmt = stmt.where(Task.status == status)
            rows = list(s.scalars(stmt).all())
            s.expunge_all()
            return rows

    def active(self) -> list[Task]:
        """Tasks being worked on now, by any node sharing this database."""
        with self._sessions() as s:
            rows = list(s.scalars(select(Task).where(Task.status.in_(ACTIVE_STATES))))
            s.expunge_all()
            return rows

    def events(self, task_id: int) -> list[TaskEvent]:
        with self._sessions() as s:
            stmt = select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(TaskEvent.id)
            rows = list(s.scalars(stmt))
            s.expunge_all()
            return rows

    def active_workers(self) -> set[str]:
        """Worker ids that hold running tasks (to find the ones that died with their node)."""
        with self._sessions() as s:
            rows = s.scalars(select(Task.worker_id).where(Task.status.in_(ACTIVE_STATES)))
            return {w for w in rows if w}

    def unsettled(self, finished_before: datetime | None = None) -> list[Task]:
        """Completed/failed tasks whose source is still in the inbox: the service stopped
        between recording the outcome and moving the file, or the move failed (the file was
        held open). Start-up and then maintenance finish the move."""
        cond = [Task.status.in_((COMPLETED, FAILED)), Task.source_state == "inbox"]
        if finished_before is not None:
            cond.append(Task.finished_at < finished_before)
        with self._sessions() as s:
            rows = list(s.scalars(select(Task).where(*cond)))
            s.expunge_all()
            return rows

    def statuses(self, task_ids: list[int]) -> dict[int, str]:
        with self._sessions() as s:
            rows = s.execute(select(Task.id, Task.status).where(Task.id.in_(task_ids))).all()
        return {tid: st for tid, st in rows}

    def counts(self) -> dict[str, int]:
        with self._sessions() as s:
            got = dict(s.execute(select(Task.status, func.count()).group_by(Task.status)).all())
        return {st: int(got.get(st, 0)) for st in ALL_STATES}
