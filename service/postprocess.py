"""The one post-processing stage every engine's result goes through before it is written.

Whisper can invent text where nobody speaks, loop on a phrase, echo its prompt, and put a
timestamp past the end of the file. Each guard here removes one such failure, and every change
is recorded (`Report.changes`, written into the json output) so a user can audit what was
removed and why. Order: times into the file → outside speech → prompt echo → boilerplate →
repetition inside a segment → loops across segments → ordered, non-overlapping cues → script.

Input and output are openai-whisper's result dict (`text`, `segments` with `start`, `end`,
`text` and optional `words`, `language`); the faster-whisper engine produces the same shape.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import script
from .vad import Region

DATA_FILE = Path(__file__).resolve().parent / "data" / "hallucinations.txt"
MIN_SPEECH_OVERLAP = 0.2  # seconds of a segment that must lie in speech for it to stay
LOOP_SIMILARITY = 0.9  # near-identical consecutive segments (difflib ratio of normalised text)
# This many near-identical segments in a row are a loop. Two are not: people do repeat a
# sentence ("We will review the budget first." twice in bench/quality.py's corpus).
LOOP_RUN = 3
ECHO_MIN_CHARS = 5
ECHO_SIMILARITY = 0.85
BROKEN = "\ufffd"  # what a split multi-byte character decodes to

_UNIT_REPEAT = re.compile(r"(\S.{1,15}?)(?:[\s,，、。.]*\1){3,}")
_CHAR_REPEAT = re.compile(r"(\w)\1{4,}")
# A segment that is only a bracketed sound label ("(音樂播放中)", "[Music]") or music notes.
_SOUND_ONLY = re.compile(r"^[\s♪♫]*[(\[（【][^()\[\]（）【】]*[)\]）】][\s♪♫]*$|^[\s♪♫]+$")

__all__ = ["Report", "apply", "normalise"]


@dataclass
class Report:
    """What the stage did to one transcript (written to the json output)."""

    changes: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    chinese_script: str | None = None

    def note(self, action: str, reason: str, seg: dict[str, Any], **extra: Any) -> None:
        self.changes.append({"action": action, "reason": reason,
                             "start": round(float(seg["start"]), 3),
                             "end": round(float(seg["end"]), 3),
                             "text": seg.get("text", ""), **extra})

    def as_json(self) -> dict[str, Any]:
        return {"changes": self.changes, "warnings": self.warnings,
                "chinese_script": self.chinese_script}


@lru_cache(maxsize=1)
def _t2s() -> Any:
    import opencc

    return opencc.OpenCC("t2s")


def normalise(text: str) -> str:
    """For comparisons only: NFKC, lower case, no spaces or punctuation, Simplified characters."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] in "LN")
    return _t2s().convert(text)


@lru_cache(maxsize=4)
def _phrases(path: Path) -> tuple[frozenset[str], tuple[str, ...]]:
    """(whole-segment phrases, phrases removed anywhere), normalised, from the data file."""
    whole, anywhere = set(), []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("~"):
            if key := normalise(line[1:]):
                anywhere.append(key)
        elif key := normalise(line):
            whole.add(key)
    return frozenset(whole), tuple(sorted(set(anywhere), key=len, reverse=True))


def apply(result: dict[str, Any], *, duration: float, regions: Sequence[Region] | None,
          prompt: str | None, opencc_config: str | None,
          phrases_file: Path = DATA_FILE) -> Report:
    """Run every guard and the script conversion on `result` in place; return the report.

    `regions` are the VAD's speech regions (None when VAD was off: the speech guard is skipped).
    `opencc_config` is applied when the transcript's language is Chinese.
    """
    report = Report()
    segments = [dict(s) for s in result.get("segments", [])]
    segments = _into_file(segments, duration, report)
    if regions is not None:
        segments = _inside_speech(segments, regions, report)
    segments = _without_prompt_echo(segments, prompt, report)
    segments = _without_broken_characters(segments, report)
    segments = _without_boilerplate(segments, phrases_file, report)
    segments = _collapse_repeats_inside(segments, report)
    segments = _collapse_loops(segments, report)
    segments = _ordered(segments, report)
    for i, seg in enumerate(segments):
        seg["id"] = i
    result["segments"] = segments
    result["text"] = "".join(s.get("text", "") for s in segments)
    if opencc_config and script.applies(result.get("language")):
        script.convert_result(result, opencc_config)
        report.chinese_script = opencc_config
    return report


# --------------------------------------------------------------------------- the guards


def _into_file(segments: list[dict], duration: float, report: Report) -> list[dict]:
    """Every time inside [0, duration], start ≤ end; a segment wholly past the end is dropped."""
    kept = []
    for seg in segments:
        start, end = float(seg["start"]), float(seg["end"])
        if start >= duration and duration > 0:
            report.note("dropped", "after_end_of_audio", seg)
            continue
        new_start = min(max(0.0, start), duration)
        new_end = min(max(new_start, end), duration)
        _retime(seg, new_start, new_end, "outside_audio", report)
        _clamp_words(seg)
        kept.append(seg)
    return kept


def _overlap(start: float, end: float, region: Region) -> float:
    return max(0.0, min(end, region.end) - max(start, region.start))


def _inside_speech(segments: list[dict], regions: Sequence[Region],
                   report: Report) -> list[dict]:
    """Drop segments (nearly) outside every speech region; trim the rest to their regions."""
    kept = []
    for seg in segments:
        start, end = float(seg["start"]), float(seg["end"])
        touching = [r for r in regions if _overlap(start, end, r) > 0]
        inside = sum(_overlap(start, end, r) for r in touching)
        if inside < min(MIN_SPEECH_OVERLAP, max(end - start, 0.0) / 2) or not touching:
            report.note("dropped", "outside_speech", seg)
            continue
        _retime(seg, max(start, touching[0].start), min(end, touching[-1].end),
                "outside_speech", report)
        kept.append(seg)
    return kept


def _without_prompt_echo(segments: list[dict], prompt: str | None,
                         report: Report) -> list[dict]:
    """Drop a segment that only repeats the prompt (Whisper does that on unclear audio)."""
    target = normalise(prompt or "")
    if not target:
        return segments
    kept = []
    for seg in segments:
        text = normalise(seg.get("text", ""))
        echo = len(text) >= ECHO_MIN_CHARS and (
            text in target or difflib.SequenceMatcher(None, text, target).ratio()
            >= ECHO_SIMILARITY)
        if echo:
            report.note("dropped", "prompt_echo", seg)
        else:
            kept.append(seg)
    return kept


def _without_broken_characters(segments: list[dict], report: Report) -> list[dict]:
    """Remove U+FFFD: a character Whisper's byte-level tokens split (across two windows, or
    cut by a guard) decodes as U+FFFD — never a word anyone said. A segment left empty is
    dropped by the next guard."""
    for seg in segments:
        raw = seg.get("text", "")
        if BROKEN in raw:
            seg["text"] = raw.replace(BROKEN, "")
            report.note("edited", "broken_character", seg, new_text=seg["text"])
        for word in seg.get("words") or []:
            word["word"] = word.get("word", "").replace(BROKEN, "")
    return segments


def _without_boilerplate(segments: list[dict], phrases_file: Path,
                         report: Report) -> list[dict]:
    """Drop known invented phrases (subtitle credits, 'please subscribe', sound labels)."""
    whole, anywhere = _phrases(phrases_file)
    kept = []
    for seg in segments:
        raw = seg.get("text", "")
        text = normalise(raw)
        rest = text
        for phrase in anywhere:
            rest = rest.replace(phrase, "")
        if not text or text in whole or not rest or _SOUND_ONLY.match(raw):
            report.note("dropped", "boilerplate" if raw.strip() else "empty", seg)
            continue
        if rest != text:  # a credit line glued to real speech: keep the speech
            cleaned = _remove_phrases(raw, anywhere)
            report.note("edited", "boilerplate", seg, new_text=cleaned)
            seg["text"] = cleaned
        kept.append(seg)
    return kept


def _remove_phrases(raw: str, phrases: Sequence[str]) -> str:
    """Remove each phrase from raw text, matching its characters with anything between them
    that normalisation ignores (spaces, punctuation), in either script."""
    simplified = _t2s().convert(unicodedata.normalize("NFKC", raw))
    if len(simplified) != len(raw):  # positions would not line up: leave the text as it is
        return raw
    text = raw
    for phrase in phrases:
        pattern = r"[\W_]*".join(re.escape(ch) for ch in phrase)
        m = re.search(pattern, simplified, flags=re.IGNORECASE)
        while m:
            text = text[:m.start()] + text[m.end():]
            simplified = simplified[:m.start()] + simplified[m.end():]
            m = re.search(pattern, simplified, flags=re.IGNORECASE)
    return text


def _collapse_repeats_inside(segments: list[dict], report: Report) -> list[dict]:
    """'哦哦哦哦哦…' or 'I'm sorry. I'm sorry. I'm sorry. I'm sorry.' → said once (three times
    for a single character: 哈哈哈)."""
    for seg in segments:
        raw = seg.get("text", "")
        text = _CHAR_REPEAT.sub(lambda m: m.group(1) * 3, raw)
        text = _UNIT_REPEAT.sub(lambda m: m.group(1), text)
        if text != raw:
            report.note("edited", "repetition", seg, new_text=text)
            seg["text"] = text
    return segments


def _collapse_loops(segments: list[dict], report: Report) -> list[dict]:
    """Keep the first of a run of near-identical consecutive segments (a decoding loop)."""
    kept: list[dict] = []
    i = 0
    while i < len(segments):
        key = normalise(segments[i].get("text", ""))
        j = i + 1
        while j < len(segments) and _same(key, normalise(segments[j].get("text", ""))):
            j += 1
        kept.append(segments[i])
        if j - i >= LOOP_RUN:
            for seg in segments[i + 1:j]:
                report.note("dropped", "loop", seg)
        else:
            kept.extend(segments[i + 1:j])
        i = j
    return kept


def _same(a: str, b: str) -> bool:
    return bool(a) and (a == b or difflib.SequenceMatcher(None, a, b).ratio() >= LOOP_SIMILARITY)


def _ordered(segments: list[dict], report: Report) -> list[dict]:
    """Cues in time order that never overlap (players show overlapping cues on top of each
    other): a segment starts no earlier than the previous one ends."""
    segments = sorted(segments, key=lambda s: (float(s["start"]), float(s["end"])))
    last_end = 0.0
    for seg in segments:
        start, end = float(seg["start"]), float(seg["end"])
        if start < last_end:
            _retime(seg, last_end, max(end, last_end), "overlap", report)
        last_end = max(last_end, float(seg["end"]))
    return segments


def _retime(seg: dict, start: float, end: float, reason: str, report: Report) -> None:
    """Move a segment's times (and its words with it), recording the change."""
    if (start, end) == (float(seg["start"]), float(seg["end"])):
        return
    report.note("clamped", reason, seg, new_start=round(start, 3), new_end=round(end, 3))
    seg["start"], seg["end"] = start, end
    _clamp_words(seg)


def _clamp_words(seg: dict) -> None:
    """Word times inside their segment and in order."""
    words = seg.get("words")
    if not words:
        return
    lo, hi = float(seg["start"]), float(seg["end"])
    last = lo
    for w in words:
        start = min(max(float(w.get("start", lo)), last), hi)
        end = min(max(float(w.get("end", start)), start), hi)
        w["start"], w["end"] = start, end
        last = start
