"""Several machines, one queue: two real services (`python app.py --settings …`, worker ids
host:pid) on ONE PostgreSQL database (tests/pg.py) and the SAME inbox/outbox/archive, each with
its own logs folder, real watchdog, real worker processes and real tiny.en weights.

Every file is transcribed exactly once; then one node is killed with SIGKILL in the middle of a
task, its worker processes die with it, and the other node reaps the task when its lease expires
(maintenance every 5 s), runs it again and moves the source — once.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from service import db
from service.tables import COMPLETED, LOADING, PENDING, PROCESSING
from service.tasks import TaskQueue
from tests.conftest import write_settings
from tests.speech import (
    espeak_available,
    silence_wav,
    speak_wav,
    wait_for,
)
from tests.svc import ServiceProcess

pytestmark = pytest.mark.slow

LEASE_SECONDS = 6
FORMATS = ("txt", "srt", "vtt", "json")
SPEECH = {  # file → (what espeak-ng says, a word its transcript must contain)
    "talk.wav": ("Please transcribe this audio file carefully.", "transcribe"),
    "team/update.wav": ("The meeting starts at nine in the morning.", "morning"),
    "notes.wav": ("Thank you for listening to this recording.", "listening"),
}
# ~17 s of speech: several seconds of work for tiny.en, time enough to kill its node mid-task
# (a tone is no good here: Whisper may loop on it for minutes).
LONG_TEXT = " ".join(text for text, _ in SPEECH.values()) * 2


def node(folder: Path, shared: Path, url: str, models: Path) -> ServiceProcess:
    """One service process: its own settings file and logs folder, shared everything else."""
    return ServiceProcess(write_settings(folder, {
        "paths": {"inbox": str(shared / "inbox"), "outbox": str(shared / "outbox"),
                  "archive": str(shared / "archive"), "failed": str(shared / "failed"),
                  "logs": str(folder / "logs")},
        "database": {"url": url},
        "models": {"dir": str(models), "default": "tiny.en", "allow_download": False,
                   "keep_warm_seconds": 30},
        "gpu": {"devices": "none"},
        # Two nodes on one small test machine: one torch thread each. With torch's default
        # (all cores) per node, 25 s of speech took 86 s instead of 13 s on a busy 2-core box.
        "cpu": {"threads_per_task": 1},
        "watcher": {"stable_seconds": 1, "rescan_seconds": 5},
        "scheduler": {"interval_seconds": 0.5, "lease_seconds": LEASE_SECONDS,
                      "backoff_seconds": 1, "progress_seconds": 0.5},
        "http": {"enabled": False},
    }))


def drop(staged: Path, inbox: Path, rel: str) -> None:
    """Copy in the way a user does: a temporary name, then a rename."""
    target = inbox / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    shutil.copy(staged, part)
    os.replace(part, target)


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def outputs_for(*rels: str) -> list[str]:
    return sorted(f"{rel.rsplit('.', 1)[0]}.{ext}" for rel in rels for ext in FORMATS)


def test_two_nodes_share_one_queue_and_survive_a_killed_node(
    tmp_path: Path, pg_url: str, models_dir: Path
) -> None:
    if not espeak_available():
        pytest.skip("needs espeak-ng")
    shared = tmp_path / "shared"
    nodes = [node(tmp_path / name, shared, pg_url, models_dir) for name in ("node1", "node2")]
    queue = TaskQueue(db.make_engine(pg_url))
    try:
        wait_for(lambda: all(n.started() for n in nodes), timeout=90)
        inbox, outbox, archive = nodes[0].settings.inbox, shared / "outbox", shared / "archive"

        # ---- a batch: every file exactly once -------------------------------------------------
        staged = tmp_path / "staged"
        batch = {rel: speak_wav(text, staged / rel) for rel, (text, _) in SPEECH.items()}
        batch["sub/quiet.wav"] = silence_wav(staged / "sub" / "quiet.wav", 3.0)
        for rel, wav in batch.items():
            drop(wav, inbox, rel)

        def batch_done() -> list:
            rows = queue.list(limit=100)
            return rows if len(rows) >= len(batch) and all(
                r.status == COMPLETED and r.source_state == "archived" for r in rows) else []

        t0 = time.monotonic()
        rows = wait_for(batch_done, timeout=150, interval=0.5)
        print(f"batch of {len(batch)} done in {time.monotonic() - t0:.1f} s")
        assert sorted(r.source for r in rows) == sorted(batch)  # one task row per file
        for row in rows:
            steps = [e.to_status for e in queue.events(row.id)]
            assert steps == [PENDING, LOADING, PROCESSING, COMPLETED], (row.source, steps)
            assert row.attempts == 0 and row.outputs
        by_node = Counter(r.worker_id for r in rows)
        assert set(by_node) == {n.worker_id for n in nodes}, by_node  # both nodes took work
        assert files_under(outbox) == outputs_for(*batch)  # one set of outputs, no "(1)" copies
        assert files_under(archive) == sorted(batch)  # each source archived once
        assert files_under(inbox) == []
        for rel, (_, word) in SPEECH.items():  # each transcript belongs to its own file
            said = (outbox / rel).with_suffix(".txt").read_text(encoding="utf-8")
            assert word in said.lower(), (rel, said)

        # ---- kill -9 the node that runs a task; the other one finishes it -------------------
        drop(speak_wav(LONG_TEXT, staged / "long.wav"), inbox, "long.wav")
        running = wait_for(lambda: [r for r in queue.list(status=PROCESSING, limit=5)
                                    if r.source == "long.wav"], timeout=90)[0]
        victim = next(n for n in nodes if n.worker_id == running.worker_id)
        survivor = next(n for n in nodes if n is not victim)
        workers = psutil.Process(victim.proc.pid).children(recursive=True)
        assert workers, "the busy node has no worker process"
        t0 = time.monotonic()
        print(f"long.wav processing on {victim.worker_id}: kill -9")
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=10)
        gone, alive = psutil.wait_procs(workers, timeout=15)
        assert alive == [], "worker processes outlived their killed node"

        def finished():  # noqa: ANN202
            row = queue.get(running.id)
            return row if row.status == COMPLETED and row.source_state == "archived" else None

        # lease (6 s) + maintenance period (5 s) + the second run (no backoff after a crash)
        row = wait_for(finished, timeout=120, interval=0.5)
        print(f"recovered and finished by {survivor.worker_id} {time.monotonic() - t0:.1f} s "
              "after the kill")
        # its node died, not the file: no attempt spent, one crash requeue counted
        assert row.worker_id == survivor.worker_id
        assert (row.attempts, row.crash_retries) == (0, 1)
        events = [(e.from_status, e.to_status, e.worker_id) for e in queue.events(row.id)]
        assert events == [
            (None, PENDING, None),
            (PENDING, LOADING, victim.worker_id),
            (LOADING, PROCESSING, victim.worker_id),
            (PROCESSING, PENDING, victim.worker_id),  # reaped by the survivor
            (PENDING, LOADING, survivor.worker_id),
            (LOADING, PROCESSING, survivor.worker_id),
            (PROCESSING, COMPLETED, survivor.worker_id),
        ], events
        assert queue.events(row.id)[3].detail.startswith("interrupted")
        assert "lease expired" in survivor.output()
        assert files_under(archive) == sorted([*batch, "long.wav"])  # moved once, no "(1)"
        assert files_under(outbox) == outputs_for(*batch, "long.wav")
        assert files_under(inbox) == []
        assert len(queue.list(limit=100)) == len(batch) + 1  # no duplicate task rows
        assert survivor.stop() == 0, survivor.output()[-3000:]
    finally:
        for n in nodes:
            n.stop()
            print(f"---- node {n.worker_id} (shown when the test fails)\n{n.output()[-4000:]}")
        queue.engine.dispose()
