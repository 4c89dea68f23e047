"""service.outputs: transcript files, atomic all-or-nothing writes, safe paths, error reports."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import TextIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service import outputs
from service.outputs import (
    OUTPUT_FORMATS,
    UnsafePathError,
    output_dir_for,
    remove_temp_leftovers,
    write_error_report,
    write_transcripts,
)


def make_result(first: str = " 请认真转写这段音频。", words: bool = False) -> dict:
    """A transcribe() result shaped like openai-whisper's (with the extra keys it carries)."""
    segments = [
        {"id": 0, "seek": 0, "start": 0.0, "end": 2.5, "text": first, "tokens": [1, 2],
         "temperature": 0.0, "avg_logprob": -0.21, "compression_ratio": 1.1,
         "no_speech_prob": 0.01},
        {"id": 1, "seek": 3000, "start": 62.25, "end": 65.004, "text": " Second --> line.",
         "tokens": [3], "temperature": 0.0, "avg_logprob": -0.35, "compression_ratio": 1.2,
         "no_speech_prob": 0.02},
        {"id": 2, "seek": 6000, "start": 3725.5, "end": 3727.0, "text": " Tab\there.",
         "tokens": [4], "temperature": 0.2, "avg_logprob": -0.4, "compression_ratio": 1.0,
         "no_speech_prob": 0.03},
    ]
    if words:
        for seg in segments:
            seg["words"] = [
                {"word": w, "start": seg["start"] + 0.1 * i, "end": seg["start"] + 0.1 * i + 0.1,
                 "probability": 0.9}
                for i, w in enumerate(seg["text"].split(" ")[1:])
            ]
    return {"text": "".join(s["text"] for s in segments), "segments": segments, "language": "zh"}


META = {
    "model": "tiny.en",
    "source": "team/会议 记录 1.mp3",
    "audio_seconds": 3727.0,
    "load_seconds": 0.4,
    "transcribe_seconds": 12.5,
    "created_at": datetime(2025, 11, 23, 12, 0, tzinfo=timezone.utc),
}

STEM = "会议 记录 1"


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# --- output_dir_for -------------------------------------------------------------------------


def test_output_dir_mirrors_the_source_folder(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    assert output_dir_for(outbox, "talk.mp3") == outbox
    assert output_dir_for(outbox, PurePosixPath("team/talk.mp3")) == outbox / "team"
    chinese = outbox / "会议 资料" / "第 1 组"
    assert output_dir_for(outbox, "会议 资料/第 1 组/会议 记录 1.mp3") == chinese
    # A backslash separates folders only on Windows; on POSIX it is part of the name (issue 15.4).
    backslashed = output_dir_for(outbox, "会议 资料\\第 1 组\\x.mp3")
    assert backslashed == (chinese if os.name == "nt" else outbox)
    assert output_dir_for(outbox, "./team//sub/./x.mp3") == outbox / "team" / "sub"


@pytest.mark.parametrize(
    "rel",
    [
        "../x.mp3",
        "team/../../x.mp3",
        "team/../x.mp3",
        "/etc/x.mp3",
        "//server/share/x.mp3",
        "..",
        "",
        "  ",
        "a\x00b/x.mp3",
    ]
    # Only Windows reads these as drives, UNC paths or separators; on POSIX they are names.
    + (["\\etc\\x.mp3", "C:\\x.mp3", "C:x.mp3", "c:/Windows/x.mp3",
        "\\\\server\\share\\x.mp3", "team\\..\\..\\x.mp3"] if os.name == "nt" else []),
)
def test_output_dir_refuses_paths_leaving_the_outbox(tmp_path: Path, rel: str) -> None:
    with pytest.raises(UnsafePathError):
        output_dir_for(tmp_path / "outbox", rel)
    assert issubclass(UnsafePathError, ValueError)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_output_dir_refuses_a_symlinked_folder_pointing_outside(tmp_path: Path) -> None:
    outbox, elsewhere = tmp_path / "outbox", tmp_path / "elsewhere"
    outbox.mkdir()
    elsewhere.mkdir()
    (outbox / "link").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UnsafePathError):
        output_dir_for(outbox, "link/x.mp3")


_part = st.one_of(
    st.sampled_from(["..", ".", "", "C:", "c:", "会议 记录", "a b", "~", "\\", "/", "x.mp3"]),
    st.text(alphabet=st.sampled_from(list("ab.:\\/ 会")), min_size=1, max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(_part, min_size=1, max_size=5), sep=st.sampled_from(["/", "\\"]))
def test_output_dir_never_leaves_the_outbox(tmp_path_factory, parts: list[str], sep: str) -> None:
    outbox = tmp_path_factory.getbasetemp() / "prop-outbox"
    rel = sep.join(parts)
    try:
        target = output_dir_for(outbox, rel)
    except UnsafePathError:
        return
    real_outbox = os.path.realpath(outbox)
    assert os.path.commonpath([real_outbox, os.path.realpath(target)]) == real_outbox
    assert ".." not in target.relative_to(outbox).parts


# --- write_transcripts ----------------------------------------------------------------------


def test_writes_every_format_utf8_without_bom(tmp_path: Path) -> None:
    written = write_transcripts(make_result(), tmp_path, STEM, OUTPUT_FORMATS, META)
    assert [p.name for p in written] == [f"{STEM}.{f}" for f in OUTPUT_FORMATS]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)
    for path in written:
        data = path.read_bytes()
        assert not data.startswith(b"\xef\xbb\xbf"), path.name
        assert b"\r\n" not in data, path.name
        data.decode("utf-8")
    txt = (tmp_path / f"{STEM}.txt").read_text(encoding="utf-8")
    assert txt == "请认真转写这段音频。\nSecond --> line.\nTab\there.\n"


def test_srt_and_vtt_timestamps(tmp_path: Path) -> None:
    write_transcripts(make_result(), tmp_path, "t", ["srt", "vtt", "tsv"], META)
    srt = (tmp_path / "t.srt").read_text(encoding="utf-8")
    assert srt == (
        "1\n00:00:00,000 --> 00:00:02,500\n请认真转写这段音频。\n\n"
        "2\n00:01:02,250 --> 00:01:05,004\nSecond -> line.\n\n"
        "3\n01:02:05,500 --> 01:02:07,000\nTab\there.\n\n"
    )
    vtt = (tmp_path / "t.vtt").read_text(encoding="utf-8")
    assert vtt.startswith("WEBVTT\n\n")
    assert "00:00.000 --> 00:02.500\n请认真转写这段音频。\n" in vtt
    assert "01:02.250 --> 01:05.004\n" in vtt
    assert "01:02:05.500 --> 01:02:07.000\n" in vtt  # hours appear only when needed
    tsv = (tmp_path / "t.tsv").read_text(encoding="utf-8").splitlines()
    assert tsv[0] == "start\tend\ttext"
    assert tsv[2] == "62250\t65004\tSecond --> line."
    assert tsv[3] == "3725500\t3727000\tTab here."


def test_json_has_segments_meta_and_keeps_chinese(tmp_path: Path) -> None:
    (path,) = write_transcripts(make_result(), tmp_path, STEM, ["json"], META)
    raw = path.read_bytes()
    assert "请认真转写".encode() in raw and b"\\u" not in raw  # ensure_ascii=False
    doc = json.loads(raw.decode("utf-8"))
    assert list(doc)[:3] == ["text", "segments", "language"]
    assert doc["language"] == "zh" and doc["text"].startswith(" 请认真")
    assert doc["model"] == "tiny.en" and doc["source"] == "team/会议 记录 1.mp3"
    assert doc["audio_seconds"] == 3727.0 and doc["transcribe_seconds"] == 12.5
    assert doc["created_at"] == "2025-11-23T12:00:00+00:00"
    assert doc["segments"][1] == {
        "id": 1, "start": 62.25, "end": 65.004, "text": " Second --> line.",
        "avg_logprob": -0.35, "no_speech_prob": 0.02,
    }


def test_json_gets_a_created_at_when_meta_has_none(tmp_path: Path) -> None:
    meta = {k: v for k, v in META.items() if k != "created_at"}
    (path,) = write_transcripts(make_result(), tmp_path, "x", ["json"], meta)
    stamp = datetime.fromisoformat(json.loads(path.read_text(encoding="utf-8"))["created_at"])
    assert abs(datetime.now(timezone.utc) - stamp) < timedelta(minutes=1)
    assert "created_at" not in meta


def test_word_timestamps_are_kept_in_json_and_used_by_subtitles(tmp_path: Path) -> None:
    import numpy as np

    result = make_result(first=" Hello there world.", words=True)
    result["segments"][0]["words"][0]["probability"] = np.float32(0.5)  # numpy sneaks in
    write_transcripts(result, tmp_path, "w", ["json", "srt"], META)
    doc = json.loads((tmp_path / "w.json").read_text(encoding="utf-8"))
    assert [w["word"] for w in doc["segments"][0]["words"]] == ["Hello", "there", "world."]
    assert doc["segments"][0]["words"][0]["probability"] == 0.5
    assert "Hello" in (tmp_path / "w.srt").read_text(encoding="utf-8")


def test_empty_transcript(tmp_path: Path) -> None:
    result = {"text": "", "segments": [], "language": "en"}
    written = write_transcripts(result, tmp_path, "quiet", OUTPUT_FORMATS, META)
    assert (tmp_path / "quiet.txt").read_text(encoding="utf-8") == ""
    assert (tmp_path / "quiet.vtt").read_text(encoding="utf-8") == "WEBVTT\n\n"
    assert len(written) == 5


def test_creates_folders_and_reruns_replace_the_same_files(tmp_path: Path) -> None:
    out = tmp_path / "outbox" / "会议 资料"
    write_transcripts(make_result(" first run"), out, STEM, ["txt", "json"], META)
    write_transcripts(make_result(" second run"), out, STEM, ["txt", "json"], META)
    assert sorted(p.name for p in out.iterdir()) == [f"{STEM}.json", f"{STEM}.txt"]
    assert (out / f"{STEM}.txt").read_text(encoding="utf-8").startswith("second run")


def _fail_on_call(monkeypatch: pytest.MonkeyPatch, n: int) -> list[str]:
    """Make the n-th format rendered fail, after it has written part of its temp file."""
    real = outputs._render
    calls: list[str] = []

    def render(fmt: str, result: dict, meta: dict, fh: TextIO) -> None:
        calls.append(fmt)
        if len(calls) == n:
            fh.write("partial")
            raise RuntimeError("writer exploded")
        real(fmt, result, meta, fh)

    monkeypatch.setattr(outputs, "_render", render)
    return calls


def test_a_failing_writer_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _fail_on_call(monkeypatch, 3)
    with pytest.raises(RuntimeError, match="writer exploded"):
        write_transcripts(make_result(), tmp_path, STEM, ["txt", "srt", "vtt", "json"], META)
    assert calls == ["txt", "srt", "vtt"]
    assert list(tmp_path.iterdir()) == []


def test_a_failing_writer_keeps_the_previous_complete_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    formats = ["txt", "srt", "vtt", "json"]
    write_transcripts(make_result(" old"), tmp_path, STEM, formats, META)
    before = snapshot(tmp_path)
    _fail_on_call(monkeypatch, 3)
    with pytest.raises(RuntimeError):
        write_transcripts(make_result(" new"), tmp_path, STEM, formats, META)
    assert snapshot(tmp_path) == before
    assert temps(tmp_path) == []


def test_a_failing_rename_restores_the_previous_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # e.g. Windows refusing to replace a transcript another program holds open
    formats = ["txt", "srt", "json"]
    write_transcripts(make_result(" old"), tmp_path, STEM, formats, META)
    before = snapshot(tmp_path)
    real_replace = os.replace
    commits: list[str] = []

    def replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
        if outputs.is_temp_name(Path(src).name) and not outputs.is_temp_name(Path(dst).name):
            commits.append(Path(dst).name)
            if len(commits) == 2:
                raise PermissionError(13, "The process cannot access the file", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    with pytest.raises(PermissionError):
        write_transcripts(make_result(" new"), tmp_path, STEM, formats, META)
    monkeypatch.undo()
    assert snapshot(tmp_path) == before
    assert temps(tmp_path) == []


def test_refuses_unknown_formats_unsafe_names_and_meta_clashes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown output format"):
        write_transcripts(make_result(), tmp_path, "x", ["txt", "docx"], META)
    for stem in ("../x", "a/b", "", "..", *(["a\\b"] if os.name == "nt" else [])):
        with pytest.raises(UnsafePathError):
            write_transcripts(make_result(), tmp_path, stem, ["txt"], META)
    with pytest.raises(ValueError, match="meta must not override"):
        write_transcripts(make_result(), tmp_path, "x", ["json"], {"text": "oops"})
    assert list(tmp_path.iterdir()) == []


# --- error reports --------------------------------------------------------------------------


def test_error_report_says_what_why_and_what_next(tmp_path: Path) -> None:
    when = datetime(2025, 11, 23, 4, 5, 6, tzinfo=timezone.utc)
    path = write_error_report(
        tmp_path / "team", STEM,
        source_name="team/会议 记录 1.mp3",
        message="This file has no audio stream (it looks like a video-only file).",
        attempts=3, when=when, hint="Export the sound track as MP3 and try again.",
        moved_to="failed/team/会议 记录 1.mp3",
    )
    assert path == tmp_path / "team" / f"{STEM}.error.txt"
    raw = path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    text = raw.decode("utf-8")
    assert 'DropScribe could not transcribe "team/会议 记录 1.mp3".' in text
    assert "What went wrong: This file has no audio stream" in text
    assert "Gave up after 3 attempts" in text
    local = when.astimezone()
    assert f"{local:%Y-%m-%d %H:%M:%S}" in text
    assert "moved to failed/team/会议 记录 1.mp3" in text
    assert "copy it into the inbox again" in text
    assert "Hint: Export the sound track as MP3 and try again." in text
    assert temps(tmp_path) == []


def test_error_report_defaults_and_overwrite(tmp_path: Path) -> None:
    naive_utc = datetime(2025, 1, 2, 3, 4, 5)
    write_error_report(tmp_path, "x", source_name="x.mp3", message="first", attempts=1,
                       when=naive_utc)
    path = write_error_report(tmp_path, "x", source_name="x.mp3", message="second", attempts=1,
                              when=naive_utc)
    text = path.read_text(encoding="utf-8")
    assert "second" in text and "first" not in text
    assert "Gave up after 1 attempt," in text and "the failed folder" in text
    assert "Hint" not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.error.txt"]


# --- leftovers ------------------------------------------------------------------------------


def test_remove_temp_leftovers_removes_only_our_old_temps(tmp_path: Path) -> None:
    sub = tmp_path / "team" / "会议"
    sub.mkdir(parents=True)
    old = time.time() - timedelta(hours=3).total_seconds()
    ours_old = [
        outputs._temp_path(tmp_path, "a.txt"),
        outputs._temp_path(sub, f"{STEM}.srt"),
        outputs._temp_path(sub, "x" * 300 + ".json"),  # long name → hashed temp name
    ]
    ours_young = outputs._temp_path(tmp_path, "b.txt")
    others = [tmp_path / ".notes.tmp", tmp_path / "draft.tmp", tmp_path / "a.txt",
              sub / ".会议.abcdef.tmp", sub / ".hidden"]
    for p in [*ours_old, ours_young, *others]:
        p.write_text("x", encoding="utf-8")
    for p in [*ours_old, *others]:
        os.utime(p, (old, old))
    assert all(outputs.is_temp_name(p.name) for p in ours_old)
    assert remove_temp_leftovers(tmp_path, max_age_minutes=60) == 3
    assert not any(p.exists() for p in ours_old)
    assert ours_young.exists() and all(p.exists() for p in others)
    assert remove_temp_leftovers(tmp_path, max_age_minutes=0) == 1
    assert all(p.exists() for p in others)


def test_free_stem_never_reuses_another_files_transcript_name(tmp_path: Path) -> None:
    assert outputs.transcript_stem(tmp_path, "会议") == "会议"
    write_transcripts(make_result(), tmp_path, "会议", ["json"], {})
    assert outputs.transcript_stem(tmp_path, "会议") == "会议 (2)"
    assert outputs.transcript_stem(tmp_path, "会议", taken={"会议 (2)"}) == "会议 (3)"
    write_error_report(tmp_path, "坏", source_name="坏.mp3", message="m", moved_to=tmp_path,
                       attempts=1, when=datetime.now(timezone.utc))
    assert outputs.transcript_stem(tmp_path, "坏") == "坏"  # a fixed file dropped again: its place
    with pytest.raises(UnsafePathError):
        outputs.transcript_stem(tmp_path, "..")


def test_remove_partial_removes_only_this_stems_temps(tmp_path: Path) -> None:
    write_transcripts(make_result(), tmp_path, "talk", ["txt"], {})
    mine = [outputs._temp_path(tmp_path, f"talk.{fmt}") for fmt in ("txt", "json", "error.txt")]
    mine.append(outputs._temp_path(tmp_path, "t" * 300 + ".srt"))  # hashed long name
    others = [outputs._temp_path(tmp_path, "talk 1.txt"), outputs._temp_path(tmp_path, "talk.x"),
              tmp_path / ".talk.txt.notours.tmp"]
    for p in [*mine, *others]:
        p.write_text("partial", encoding="utf-8")
    assert outputs.remove_partial(tmp_path, "talk") == 3
    assert outputs.remove_partial(tmp_path, "t" * 300) == 1
    assert not any(p.exists() for p in mine)
    assert all(p.exists() for p in others) and (tmp_path / "talk.txt").is_file()
    assert outputs.remove_partial(tmp_path / "missing", "talk") == 0


def test_speaker_labels_in_every_format(tmp_path: Path) -> None:
    """txt: one `[name] …` line per turn (a speaker's consecutive segments joined); srt/vtt:
    WebVTT voice tags; tsv: the label in the text column; json: `speaker` on segments and
    words. Names are whatever the speakers stage gave (sidecar names included)."""
    result = make_result(first=" Hello there.", words=True)
    for seg, who in zip(result["segments"], ["张经理", "张经理", "Speaker 2"], strict=True):
        seg["speaker"] = who
        for w in seg["words"]:
            w["speaker"] = who
    written = write_transcripts(result, tmp_path, "m", ["txt", "srt", "vtt", "tsv", "json"],
                                {"speakers": [{"id": 1, "name": "张经理"}]})
    text = {p.suffix: p.read_text(encoding="utf-8") for p in written}
    assert text[".txt"] == "[张经理] Hello there. Second --> line.\n[Speaker 2] Tab\there.\n"
    assert "<v 张经理>Hello there." in text[".srt"] and "<v Speaker 2>Tab\there." in text[".srt"]
    assert "<v 张经理>Second -> line." in text[".vtt"]
    assert "[Speaker 2] Tab here." in text[".tsv"]  # whisper turns the tab into a space
    doc = json.loads(text[".json"])
    assert [s["speaker"] for s in doc["segments"]] == ["张经理", "张经理", "Speaker 2"]
    assert doc["segments"][2]["words"][0]["speaker"] == "Speaker 2"
    assert doc["speakers"] == [{"id": 1, "name": "张经理"}]


def test_chinese_turns_join_without_spaces(tmp_path: Path) -> None:
    result = {"language": "zh", "text": "", "segments": [
        {"id": 0, "start": 0.0, "end": 1.0, "text": "大家好。", "speaker": "说话人1"},
        {"id": 1, "start": 1.0, "end": 2.0, "text": "开始开会。", "speaker": "说话人1"},
        {"id": 2, "start": 2.0, "end": 3.0, "text": "好的。", "speaker": "说话人2"}]}
    [txt] = write_transcripts(result, tmp_path, "zh", ["txt"], {})
    assert txt.read_text(encoding="utf-8") == "[说话人1] 大家好。开始开会。\n[说话人2] 好的。\n"


def test_without_speakers_nothing_changes(tmp_path: Path) -> None:
    [doc] = write_transcripts(make_result(), tmp_path, "plain", ["json"], META)
    assert all("speaker" not in s for s in json.loads(doc.read_text("utf-8"))["segments"])
