"""Speaker labels on transcripts: turns onto segments and words, splits at a change of speaker,
names (ui.language, sidecar speaker_names); and the whole path through the real service with
real Whisper (tiny.en), the real encoder and a sidecar that renames the speakers."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from service import speakers
from service.diarize import Turn
from tests.chat_server import ChatServer
from tests.dialogue import ENGLISH_TURNS, english_meeting
from tests.speech import read_wav, wait_for
from tests.svc import ServiceProcess, service_settings

TURNS = [Turn(0.0, 5.0, 1), Turn(5.0, 9.0, 2), Turn(9.5, 14.0, 1)]


def _seg(start: float, end: float, text: str, words: list | None = None) -> dict:
    seg = {"id": 0, "start": start, "end": end, "text": text}
    if words is not None:
        seg["words"] = words
    return seg


def test_each_segment_gets_the_speaker_who_talks_most_in_it() -> None:
    result = {"segments": [_seg(0.5, 4.5, " Hello all."), _seg(5.2, 8.7, " Thanks."),
                           _seg(9.02, 9.2, " Hm."), _seg(10.0, 13.0, " Next point.")]}
    assert speakers.assign(result, TURNS) == 0
    assert [s["speaker"] for s in result["segments"]] == [1, 2, 2, 1]  # in a pause: the nearer turn


def test_a_segment_spanning_two_speakers_is_split_at_a_word_boundary() -> None:
    """No word times: the text is cut at the share of time each speaker has, at a space."""
    result = {"segments": [_seg(2.0, 8.0, " We agree on the budget. Marketing wants more.")]}
    assert speakers.assign(result, TURNS) == 1
    first, second = result["segments"]
    assert (first["start"], first["end"], first["speaker"]) == (2.0, 5.0, 1)
    assert (second["start"], second["end"], second["speaker"]) == (5.0, 8.0, 2)
    assert first["text"] + second["text"] == " We agree on the budget. Marketing wants more."
    assert first["text"].strip() == "We agree on the budget."  # the nearest boundary
    assert [s["id"] for s in result["segments"]] == [0, 1]


def test_chinese_text_is_split_between_characters_preferring_punctuation() -> None:
    text = "我们先讨论预算。市场部希望增加。"
    result = {"segments": [_seg(1.0, 9.0, text)]}
    speakers.assign(result, TURNS)
    assert [s["text"] for s in result["segments"]] == ["我们先讨论预算。", "市场部希望增加。"]


def test_a_short_overlap_is_not_a_split() -> None:
    """Under a second of the other voice in a segment is a boundary's blur, not a turn."""
    result = {"segments": [_seg(1.0, 5.6, " One long sentence from the first speaker.")]}
    assert speakers.assign(result, TURNS) == 0
    assert result["segments"][0]["speaker"] == 1


def test_words_carry_their_speaker_and_the_split_follows_them() -> None:
    words = [{"word": " Yes", "start": 3.0, "end": 3.5}, {"word": " indeed.", "start": 3.5,
             "end": 4.6}, {"word": " But", "start": 5.1, "end": 5.6},
             {"word": " not", "start": 5.6, "end": 6.2}, {"word": " now.", "start": 6.2,
             "end": 7.0}]
    result = {"segments": [_seg(3.0, 7.0, " Yes indeed. But not now.", words)]}
    speakers.assign(result, TURNS)
    a, b = result["segments"]
    assert a["text"] == " Yes indeed." and b["text"] == " But not now."
    assert {w["speaker"] for w in a["words"]} == {1} and {w["speaker"] for w in b["words"]} == {2}
    assert a["end"] == b["start"] == 5.1


def test_labels_by_ui_language_and_names_from_the_sidecar() -> None:
    assert speakers.label(1, {}, "en") == "Speaker 1"
    assert speakers.label(2, {}, "zh-CN") == "说话人2"
    assert speakers.label(1, {"1": "张经理"}, "en") == "张经理"


def test_off_changes_nothing(sentence_audio: np.ndarray) -> None:
    result = {"segments": [_seg(0.0, 1.0, " Hi.")], "text": " Hi."}
    before = copy.deepcopy(result)
    meta: dict = {"speech_regions": [[0.0, 1.0]]}
    assert speakers.apply(result, sentence_audio, {}, meta, "en") is None
    assert result == before and meta == {"speech_regions": [[0.0, 1.0]]}


def test_no_speech_no_labels() -> None:
    result = {"segments": [_seg(0.0, 1.0, " Hi.")], "text": " Hi."}
    meta: dict = {"speech_regions": []}
    assert speakers.apply(result, np.zeros(16000, np.float32), {"speakers": "auto"}, meta,
                          "en") is not None
    assert meta["speakers"] == [] and "speaker" not in result["segments"][0]


def test_without_resemblyzer_the_transcript_stays_and_says_why(
        sentence_audio: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """An install that skipped `pip install --no-deps resemblyzer==0.1.4`."""
    from service import diarize

    monkeypatch.setitem(sys.modules, "resemblyzer", None)  # import fails as if not installed
    diarize.resemblyzer_encoder.cache_clear()
    try:
        result = {"segments": [_seg(0.0, 1.0, " Hi.")], "text": " Hi."}
        meta: dict = {"speech_regions": [[0.0, 2.0]], "warnings": []}
        speakers.apply(result, sentence_audio, {"speakers": 2}, meta, "en")
    finally:
        diarize.resemblyzer_encoder.cache_clear()
    assert "speaker" not in result["segments"][0]
    assert "pip install --no-deps resemblyzer==0.1.4" in meta["warnings"][0]


def test_apply_labels_and_records(tmp_path: Path) -> None:
    """Real audio, real encoder; VAD off in the worker: the regions are found here."""
    meeting = english_meeting(tmp_path, ENGLISH_TURNS[:3])
    samples, _rate = read_wav(meeting.path)
    result = {"segments": [_seg(a, b, f" {t}") for (a, b, _k), t in
                           zip(meeting.turns, meeting.texts, strict=True)]}
    meta: dict = {"speech_regions": None}
    seconds = speakers.apply(result, samples, {"speakers": "auto",
                                               "speaker_names": {"2": "李娜"}}, meta, "zh-CN")
    assert seconds is not None and seconds == pytest.approx(meta["diarize_seconds"], abs=1e-3)
    assert [s["speaker"] for s in result["segments"]] == ["说话人1", "李娜", "说话人3"]
    assert [s["name"] for s in meta["speakers"]] == ["说话人1", "李娜", "说话人3"]
    assert meta["speaker_turns"][0][2] == 1


# --------------------------------------------------------------------------- the whole path

@pytest.mark.slow
def test_meeting_through_the_service_labels_every_format_and_writes_minutes(
        tmp_path: Path, models_dir: Path, chat_server: ChatServer) -> None:
    """speakers: auto in settings, names from the sidecar, tiny.en on the CPU; the minutes come
    from a chat server that is down at first: the transcript is complete anyway, the minutes
    follow once it answers."""
    chat_server.down = True
    meeting = english_meeting(tmp_path / "audio", ENGLISH_TURNS[:4])
    cfg = service_settings(
        tmp_path, models_dir,
        transcribe={"speakers": "auto", "output_formats": ["txt", "srt", "vtt", "tsv", "json"]},
        ui={"language": "en"},
        summary={"enabled": True, "url": chat_server.url, "model": "qwen-test",
                 "backoff_seconds": 0.5, "timeout_seconds": 10})
    svc = ServiceProcess(cfg)
    try:
        wait_for(svc.started, timeout=120)
        inbox, outbox = svc.settings.inbox, svc.settings.outbox
        (inbox / "周会.wav.json").write_text(json.dumps({"speaker_names": {"1": "张经理"}}),
                                             encoding="utf-8")
        (inbox / "周会.wav").write_bytes(meeting.path.read_bytes())
        done = wait_for(lambda: [t for t in svc.tasks() if t.status == "completed"],
                        timeout=300)[0]
        txt = (outbox / "周会.txt").read_text(encoding="utf-8")
        first = wait_for(lambda: (row := svc.queue.get(done.id)).summary_error and row,
                         timeout=60)
        assert first.summary_status in ("pending", "running")  # to be tried again
        assert "could not reach the LLM server" in first.summary_error
        chat_server.down = False
        wait_for(lambda: (outbox / "周会.minutes.md").is_file(), timeout=120)
    finally:
        assert svc.stop() == 0, svc.output()[-3000:]
    lines = txt.splitlines()
    assert [line.split("]")[0] + "]" for line in lines] == [
        "[张经理]", "[Speaker 2]", "[Speaker 3]", "[张经理]"], txt
    assert "budget" in lines[0].lower()
    srt = (outbox / "周会.srt").read_text(encoding="utf-8")
    vtt = (outbox / "周会.vtt").read_text(encoding="utf-8")
    assert "<v 张经理>" in srt and "<v Speaker 2>" in vtt and "<v Speaker 3>" in vtt
    assert "[Speaker 2]" in (outbox / "周会.tsv").read_text(encoding="utf-8")
    doc = json.loads((outbox / "周会.json").read_text(encoding="utf-8"))
    assert {s["speaker"] for s in doc["segments"]} == {"张经理", "Speaker 2", "Speaker 3"}
    assert [s["name"] for s in doc["speakers"]] == ["张经理", "Speaker 2", "Speaker 3"]
    row = svc.queue.get(done.id)
    assert row.diarize_seconds and row.diarize_seconds > 0
    assert row.summary_status == "done" and row.summary_error is None
    from sqlalchemy import text

    with svc.queue.engine.connect() as conn:
        shown = conn.execute(text("SELECT diarize_seconds, summary_status FROM task_history "
                                  "WHERE id = :i"), {"i": done.id}).one()
    assert shown == (row.diarize_seconds, "done")
    minutes = (outbox / "周会.minutes.md").read_text(encoding="utf-8")
    assert minutes.startswith("# Minutes: 周会.wav") and "## Decisions" in minutes
    request = chat_server.requests[-1]
    assert request["model"] == "qwen-test"
    assert "[张经理]" in request["messages"][-1]["content"]  # the labelled transcript was sent
