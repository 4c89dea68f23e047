"""The shared post-processing stage: every guard, the script conversion and the audit trail.

Pure functions on openai-whisper-shaped result dicts (the engines' common output), so these run
in milliseconds; the real-weights tests (test_chinese.py) show the same stage on real decoding.
"""

from __future__ import annotations

from pathlib import Path

import opencc
import pytest

from service import outputs, postprocess
from service.vad import Region

PROMPT = "以下是普通话的会议记录，请使用简体中文和标点符号。"


def seg(start: float, end: float, text: str, **extra) -> dict:
    return {"id": 0, "start": start, "end": end, "text": text, **extra}


def run(segments: list[dict], *, duration: float = 60.0, regions=None, prompt=None,
        script: str | None = "t2s", language: str = "zh") -> tuple[dict, postprocess.Report]:
    result = {"text": "".join(s["text"] for s in segments), "segments": segments,
              "language": language}
    report = postprocess.apply(result, duration=duration, regions=regions, prompt=prompt,
                               opencc_config=script)
    return result, report


def reasons(report: postprocess.Report) -> list[tuple[str, str]]:
    return [(c["action"], c["reason"]) for c in report.changes]


def test_clean_transcript_is_left_alone() -> None:
    result, report = run([seg(1, 3, "大家好。"), seg(3.5, 6, "我们开始开会。")],
                         regions=[Region(0.5, 6.5)], prompt=PROMPT)
    assert [s["text"] for s in result["segments"]] == ["大家好。", "我们开始开会。"]
    assert result["text"] == "大家好。我们开始开会。"
    assert report.changes == [] and report.chinese_script == "t2s"


def test_timestamps_are_clamped_into_the_file_and_a_segment_past_the_end_is_dropped() -> None:
    result, report = run([seg(-0.5, 2, "开始。"), seg(38, 41.7, "最后一句。"),
                          seg(40.5, 43, "不存在。")], duration=40.0)
    assert [(s["start"], s["end"]) for s in result["segments"]] == [(0.0, 2), (38, 40.0)]
    assert reasons(report) == [("clamped", "outside_audio"), ("clamped", "outside_audio"),
                               ("dropped", "after_end_of_audio")]
    assert report.changes[2]["text"] == "不存在。"


def test_segments_outside_speech_are_dropped_and_edges_trimmed() -> None:
    regions = [Region(2.0, 8.0), Region(22.0, 28.0)]
    result, report = run([seg(2.5, 9.5, "第一句。"), seg(10, 20, "字幕由某人提供"),
                          seg(21.5, 27, "第二句。")], regions=regions)
    assert [s["text"] for s in result["segments"]] == ["第一句。", "第二句。"]
    assert [(s["start"], s["end"]) for s in result["segments"]] == [(2.5, 8.0), (22.0, 27)]
    assert ("dropped", "outside_speech") in reasons(report)
    dropped = next(c for c in report.changes if c["action"] == "dropped")
    assert dropped["text"] == "字幕由某人提供" and (dropped["start"], dropped["end"]) == (10, 20)


def test_vad_off_skips_the_speech_guard() -> None:
    result, report = run([seg(10, 20, "没有语音区域时保留。")], regions=None)
    assert len(result["segments"]) == 1 and report.changes == []


@pytest.mark.parametrize("text", [
    "以下是普通话的会议记录，请使用简体中文和标点符号。",
    "以下是普通话的会议记录",
    "以下是普通話的會議記錄。",  # the echo in the other script
])
def test_prompt_echo_is_removed(text: str) -> None:
    result, report = run([seg(1, 4, text), seg(5, 8, "今天讨论预算。")], prompt=PROMPT)
    assert [s["text"] for s in result["segments"]] == ["今天讨论预算。"]
    assert reasons(report) == [("dropped", "prompt_echo")]


def test_short_words_that_occur_in_the_prompt_are_not_echo() -> None:
    result, _ = run([seg(1, 2, "会议。"), seg(2, 3, "记录。")], prompt=PROMPT)
    assert len(result["segments"]) == 2


@pytest.mark.parametrize("text", [
    "字幕由Amara.org社群提供", "字幕由Amara.org社區提供",
    "请不吝点赞 订阅 转发 打赏支持明镜与点点栏目", "請不吝點贊 訂閱 轉發 打賞支持明鏡與點點欄目",
    "(音樂播放中)", "（音乐）", "[Music]", "♪ ♪", "了解更多,請訂閱", "謝謝觀看!",
    " Thank you for watching!", "请订阅",
])
def test_boilerplate_hallucinations_are_dropped(text: str) -> None:
    result, report = run([seg(1, 3, "大家好。"), seg(4, 6, text)])
    assert [s["text"] for s in result["segments"]] == ["大家好。"]
    assert reasons(report) == [("dropped", "boilerplate")]


def test_a_credit_line_glued_to_speech_keeps_the_speech() -> None:
    result, report = run([seg(1, 5, "我们下周再见。字幕由Amara.org社群提供")])
    assert result["segments"][0]["text"] == "我们下周再见。"
    assert reasons(report) == [("edited", "boilerplate")]


def test_boilerplate_list_is_a_data_file_that_is_easy_to_extend(tmp_path: Path) -> None:
    own = tmp_path / "phrases.txt"
    own.write_text("# ours\n本节目由某公司赞助\n~感谢某某频道\n", encoding="utf-8")
    result = {"segments": [seg(1, 2, "本节目由某公司赞助。"), seg(2, 3, "好的，感谢某某频道")],
              "language": "zh", "text": ""}
    report = postprocess.apply(result, duration=10, regions=None, prompt=None,
                               opencc_config="t2s", phrases_file=own)
    assert [s["text"] for s in result["segments"]] == ["好的，"]
    assert reasons(report) == [("dropped", "boilerplate"), ("edited", "boilerplate")]
    lines = postprocess.DATA_FILE.read_text("utf-8").splitlines()
    assert "~字幕由Amara.org社群提供" in lines and "~字幕由Amara.org社區提供" in lines


def test_a_loop_of_identical_segments_is_collapsed() -> None:
    segments = [seg(1, 3, "大家好。")] + [seg(3 + i, 4 + i, "我们继续讨论这个问题。")
                                        for i in range(6)]
    result, report = run(segments)
    assert [s["text"] for s in result["segments"]] == ["大家好。", "我们继续讨论这个问题。"]
    assert reasons(report) == [("dropped", "loop")] * 5


def test_near_identical_runs_collapse_but_a_sentence_said_twice_stays() -> None:
    segments = [seg(1, 2, "对。"), seg(2, 3, "对。"), seg(3, 4, "我们先看预算。"),
                seg(5, 6, "我们先看预算。"), seg(7, 8, "好的。"), seg(8, 9, "好的，我明白了。"),
                seg(5, 7, "好的，我明白了"), seg(7, 9, "好的,我明白了!")]
    result, report = run(segments)
    assert [s["text"] for s in result["segments"]] == [
        "对。", "对。", "我们先看预算。", "我们先看预算。", "好的。", "好的，我明白了。"]
    assert reasons(report) == [("dropped", "loop")] * 2


def test_repetition_inside_a_segment_is_said_once() -> None:
    result, report = run([seg(1, 30, "我觉得可以。哦哦哦哦哦哦哦哦哦哦哦哦哦哦"),
                          seg(31, 35, " I'm sorry. I'm sorry. I'm sorry. I'm sorry. I'm sorry.",
                              ), seg(36, 37, "哈哈哈")], language="zh")
    texts = [s["text"] for s in result["segments"]]
    assert texts == ["我觉得可以。哦哦哦", " I'm sorry.", "哈哈哈"]
    assert reasons(report) == [("edited", "repetition")] * 2


def test_a_character_split_between_tokens_leaves_no_replacement_mark() -> None:
    """Whisper's tokens are bytes: a window that ends inside a Chinese character decodes its
    half as U+FFFD (seen with faster-whisper's greedy decoding on Mandarin)."""
    from whisper.tokenizer import get_tokenizer

    tokenizer = get_tokenizer(True, language="zh", task="transcribe")
    tokens = tokenizer.encode("会议结束，谢谢大家")
    cut = next(n for n in range(1, len(tokens)) if "\ufffd" in tokenizer.decode(tokens[:n]))
    broken = tokenizer.decode(tokens[:cut])
    words = [{"word": broken, "start": 1.0, "end": 2.0}]
    result, report = run([seg(1, 2, broken, words=words), seg(3, 4, "\ufffd"),
                          seg(5, 6, "好的。")], language="zh")
    texts = [s["text"] for s in result["segments"]]
    assert texts == [broken.replace("\ufffd", ""), "好的。"]
    assert "\ufffd" not in result["text"] and texts[0]
    assert "\ufffd" not in result["segments"][0]["words"][0]["word"]
    assert reasons(report) == [("edited", "broken_character"), ("edited", "broken_character"),
                               ("dropped", "empty")]


def test_cues_are_ordered_and_never_overlap_and_words_follow() -> None:
    words = [{"word": "第", "start": 4.5, "end": 5.2}, {"word": "二", "start": 5.2, "end": 9.0}]
    result, report = run([seg(5, 8, "第二。", words=words), seg(1, 6, "第一。")], duration=7.5)
    cues = [(s["start"], s["end"]) for s in result["segments"]]
    assert cues == [(1, 6), (6, 7.5)]
    assert [s["id"] for s in result["segments"]] == [0, 1]
    assert all(a[1] <= b[0] for a, b in zip(cues, cues[1:], strict=False))
    w = result["segments"][1]["words"]
    assert w[0]["start"] >= 6 and w[-1]["end"] <= 7.5
    assert ("clamped", "overlap") in reasons(report)


def test_script_conversion_reaches_every_piece_of_text() -> None:
    words = [{"word": "會議", "start": 1, "end": 2}, {"word": "記錄", "start": 2, "end": 3}]
    result, report = run([seg(1, 3, "會議記錄", words=words), seg(3, 5, "軟體和滑鼠。")],
                         script="t2s")
    assert result["text"] == "会议记录软体和滑鼠。"  # t2s: characters only, words kept
    assert [w["word"] for w in result["segments"][0]["words"]] == ["会议", "记录"]
    result, _ = run([seg(1, 3, "軟體和滑鼠。")], script="tw2sp")
    assert result["text"] == "软件和鼠标。"  # opt-in: mainland vocabulary too
    result, _ = run([seg(1, 3, "会议记录。")], script="s2t")
    assert result["text"] == "會議記錄。"


def test_script_is_left_alone_for_other_languages_and_original() -> None:
    result, report = run([seg(1, 3, "會議")], script="t2s", language="ja")
    assert result["text"] == "會議" and report.chinese_script is None
    result, report = run([seg(1, 3, "會議")], script=None)
    assert result["text"] == "會議" and report.chinese_script is None


def test_every_writer_gets_the_converted_text(tmp_path: Path) -> None:
    result, report = run([seg(0.5, 2.5, "會議開始。"), seg(3, 5, "討論預算。")], script="t2s")
    written = outputs.write_transcripts(result, tmp_path, "会议", outputs.OUTPUT_FORMATS,
                                        {"postprocess": report.as_json()})
    t2s = opencc.OpenCC("t2s")
    for path in written:
        body = path.read_text("utf-8")
        assert "会议开始" in body and "讨论预算" in body, path.name
        assert t2s.convert(body) == body, path.name  # nothing Traditional left anywhere
