"""Speaker labels on a finished transcript: turns (diarize.py) onto segments and words, names.

Runs in the worker right after the shared post-processing stage, so every engine's result gets
the same labels. A segment is given the speaker who talks most during it; one that spans a
change of speaker (two turns with no pause, or Whisper joining two people into one segment) is
split at the change: at the word where the speaker changes when word timestamps are on, else
at the matching share of its text (a word or punctuation boundary). Names are
`Speaker 1` / `说话人1` (ui.language), or the sidecar's `speaker_names`.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from . import i18n
from .diarize import Turn
from .vad import Region

log = logging.getLogger(__name__)

MIN_SPLIT_S = 1.0  # a segment is split only when the second speaker talks this long in it

__all__ = ["apply", "assign", "label"]


def label(number: int, names: dict[str, str], lang: str | None) -> str:
    """The name shown for speaker `number`: the sidecar's, else 'Speaker N' / '说话人N'."""
    return names.get(str(number)) or i18n.t("speaker.label", lang, n=number)


def _overlaps(start: float, end: float, turns: Sequence[Turn]) -> dict[int, float]:
    out: dict[int, float] = {}
    for t in turns:
        o = min(end, t.end) - max(start, t.start)
        if o > 0:
            out[t.speaker] = out.get(t.speaker, 0.0) + o
    return out


def _speaker_at(start: float, end: float, turns: Sequence[Turn]) -> int:
    """Who talks most in [start, end]; with no overlap, the nearest turn's speaker."""
    over = _overlaps(start, end, turns)
    if over:
        return max(over, key=over.get)
    mid = (start + end) / 2
    return min(turns, key=lambda t: min(abs(t.start - mid), abs(t.end - mid))).speaker


def _is_cjk(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in "WF"


def _cut(text: str, share: float) -> int:
    """Index near `share` of `text` where it may be split: before a space, after punctuation,
    or between two CJK characters (mid-word only when there is no such place)."""
    target = round(len(text) * share)
    places = [i for i in range(1, len(text))
              if text[i].isspace() or unicodedata.category(text[i - 1]).startswith("P")
              or (_is_cjk(text[i - 1]) and _is_cjk(text[i]))]
    return min(places, key=lambda i: abs(i - target)) if places else target


def _merge_short(pieces: list[list]) -> list[list]:
    """Pieces [start, end, speaker, *payload] of one segment: a piece shorter than MIN_SPLIT_S
    goes to its longer neighbour's speaker, then neighbours of one speaker join."""
    pieces = _join(pieces)
    while len(pieces) > 1:
        i = min(range(len(pieces)), key=lambda j: pieces[j][1] - pieces[j][0])
        if pieces[i][1] - pieces[i][0] >= MIN_SPLIT_S:
            break
        near = [j for j in (i - 1, i + 1) if 0 <= j < len(pieces)]
        j = max(near, key=lambda j: pieces[j][1] - pieces[j][0])
        pieces[i][2] = pieces[j][2]
        pieces = _join(pieces)
    return pieces


def _join(pieces: list[list]) -> list[list]:
    out: list[list] = []
    for p in pieces:
        if out and out[-1][2] == p[2]:
            out[-1] = [out[-1][0], p[1], p[2], *out[-1][3:4], *p[4:]]
        else:
            out.append(list(p))
    return out


def _pieces(start: float, end: float, turns: Sequence[Turn]) -> list[list]:
    """[start, end] cut where the speaker changes (short pieces merged)."""
    inside = [[max(start, t.start), min(end, t.end), t.speaker] for t in turns
              if min(end, t.end) > max(start, t.start)]
    pieces = _merge_short(inside)
    if not pieces:
        return [[start, end, _speaker_at(start, end, turns)]]
    pieces[0][0], pieces[-1][1] = start, end  # gaps between turns stay with their segment
    for a, b in zip(pieces, pieces[1:], strict=False):
        a[1] = b[0]
    return pieces


def _split_by_words(seg: dict, turns: Sequence[Turn]) -> list[dict]:
    """At the words where the speaker changes."""
    words = seg["words"]
    runs = _merge_short([[float(w["start"]), float(w["end"]),
                          _speaker_at(float(w["start"]), float(w["end"]), turns), i, i]
                         for i, w in enumerate(words)])
    if len(runs) <= 1:
        return [seg]
    out = []
    for n, (s, e, k, a, b) in enumerate(runs):
        out.append({**seg, "words": words[a:b + 1], "speaker": k,
                    "start": float(seg["start"]) if n == 0 else s,
                    "end": float(seg["end"]) if n == len(runs) - 1 else e,
                    "text": "".join(w["word"] for w in words[a:b + 1])})
    for a, b in zip(out, out[1:], strict=False):
        a["end"] = b["start"]
    return out


def _split_by_time(seg: dict, turns: Sequence[Turn]) -> list[dict]:
    start, end = float(seg["start"]), float(seg["end"])
    pieces = _pieces(start, end, turns)
    if len(pieces) == 1:
        return [seg]
    text, out, at = seg.get("text", ""), [], 0
    for n, (s, e, k) in enumerate(pieces):
        if n == len(pieces) - 1:
            cut = len(text)
        else:
            cut = at + _cut(text[at:], (e - s) / max(end - s, 1e-9))
        piece = text[at:cut]
        if piece.strip():
            out.append({**seg, "start": s, "end": e, "text": piece, "speaker": k})
        elif out:
            out[-1]["end"] = e
        at = cut
    return out or [seg]


def assign(result: dict[str, Any], turns: Sequence[Turn]) -> int:
    """Give every segment (and word) its speaker number, splitting segments at changes of
    speaker; returns how many segments were split. `result` is changed in place."""
    if not turns:
        return 0
    segments, split = [], 0
    for seg in result.get("segments", []):
        parts = _split_by_words(seg, turns) if seg.get("words") else _split_by_time(seg, turns)
        split += len(parts) > 1
        for part in parts:
            if len(parts) == 1 or "speaker" not in part:
                part["speaker"] = _speaker_at(float(part["start"]), float(part["end"]), turns)
            for w in part.get("words") or []:
                w["speaker"] = part["speaker"]
            segments.append(part)
    for i, seg in enumerate(segments):
        seg["id"] = i
    result["segments"] = segments
    return split


def apply(result: dict[str, Any], audio: np.ndarray | Callable[[], Iterable[np.ndarray]],
          decoding: dict[str, Any], meta: dict[str, Any], lang: str | None) -> float | None:
    """Label `result`'s speakers when the file's options ask for it (`speakers: auto | N`);
    adds `speakers` and `speaker_turns` to the json's `meta` and returns the seconds it took
    (None when speakers are off).

    `audio` is the file's 16 kHz samples, or a function that streams them again (the worker
    decodes a long file a piece at a time and keeps none of it). `meta["speech_regions"]` are
    the VAD's regions as the worker recorded them (None when VAD was off: then they are found
    here on the whole file, since the encoder must listen to speech only).
    """
    from . import diarize, options, vad

    opts = options.Decoding.model_validate(decoding)
    if opts.speakers == "off":
        return None
    t0 = time.perf_counter()
    samples = audio if isinstance(audio, np.ndarray) else None
    speech = meta.get("speech_regions")
    if speech is None:
        if samples is None:
            samples = np.concatenate(list(audio()) or [np.zeros(0, np.float32)])
        regions = vad.speech_regions(samples, vad.VadOptions())
    else:
        regions = [Region(float(s), float(e)) for s, e in speech]
    fixed = None if opts.speakers == "auto" else int(opts.speakers)
    try:
        turns = diarize.diarize(audio() if samples is None else samples, regions, fixed)
    except ImportError as err:  # Resemblyzer not installed: the transcript still matters
        log.warning("speaker labels skipped: %s", err)
        meta.setdefault("warnings", []).append(i18n.t("speaker.unavailable", "en", error=err))
        return time.perf_counter() - t0
    if not turns:  # no speech long enough to tell voices apart: nothing to label
        meta.update(speakers=[], speaker_turns=[],
                    diarize_seconds=round(time.perf_counter() - t0, 3))
        return time.perf_counter() - t0
    split = assign(result, turns)
    seconds: dict[int, float] = {}
    for t in turns:
        seconds[t.speaker] = seconds.get(t.speaker, 0.0) + t.end - t.start
    names = {k: label(k, opts.speaker_names, lang) for k in seconds}
    for seg in result.get("segments", []):
        seg["speaker"] = names.get(seg["speaker"], label(seg["speaker"], opts.speaker_names,
                                                         lang))
        for w in seg.get("words") or []:
            w["speaker"] = seg["speaker"]
    result["text"] = "".join(s.get("text", "") for s in result.get("segments", []))
    elapsed = time.perf_counter() - t0
    log.info("speakers: %d, %d segment(s) split, %.1f s", len(names), split, elapsed)
    meta["speakers"] = [{"id": k, "name": names[k], "seconds": round(s, 2)}
                        for k, s in sorted(seconds.items())]
    meta["speaker_turns"] = [[t.start, t.end, t.speaker] for t in turns]
    meta["diarize_seconds"] = round(elapsed, 3)
    return elapsed
