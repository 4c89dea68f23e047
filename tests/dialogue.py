"""Meetings with known speakers for the diarization tests and bench/diarize.py (espeak-ng voices,
made at test time) and the diarization error rate they are scored with.

Voices were picked by their Resemblyzer cosine (whole sentences, measured here with the voices
below): English within a voice >= 0.79, across <= 0.71 (bench/diarize.py prints it); Mandarin
within >= 0.74, across 0.59-0.69.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.speech import compose, speak_mandarin, speak_wav, speech_16k

# speaker → (espeak-ng voice, pitch)
ENGLISH_VOICES = {1: ("en-us+m3", 30), 2: ("en-us+f3", 60), 3: ("en-us+klatt", 50)}
MANDARIN_VOICES = {1: ("+m3", 40), 2: ("+f3", 60)}

ENGLISH_TURNS = [
    (1, "Good morning everyone, let us start with the budget for the next quarter."),
    (2, "Thanks. Marketing needs about ten percent more than last year."),
    (3, "Engineering can live with the same budget if we delay the new servers."),
    (1, "Then we keep engineering flat and give marketing five percent more."),
    (2, "Five percent is fine if the campaign can start in March."),
    (3, "I will send the server plan to everyone by Friday."),
]
MANDARIN_TURNS = [
    (1, "大家好，我们先讨论一下这个季度的预算。"),
    (2, "市场部希望明年的预算增加百分之十。"),
    (1, "那我们先把研发的预算保持不变。"),
    (2, "好的，我下周五之前把计划发给大家。"),
    (1, "谢谢大家，今天的会议就到这里。"),
]


@dataclass(frozen=True)
class Meeting:
    path: Path
    turns: list[tuple[float, float, int]]  # (start, end, speaker) of every spoken piece
    texts: list[str]

    @property
    def speakers(self) -> int:
        return len({s for _a, _b, s in self.turns})


def english_meeting(folder: Path, turns: Sequence[tuple[int, str]] = ENGLISH_TURNS,
                    pause: float = 0.7) -> Meeting:
    """Three espeak-ng voices taking turns, with short pauses between them."""
    pieces: list = [0.5]
    for i, (who, text) in enumerate(turns):
        voice, pitch = ENGLISH_VOICES[who]
        pieces += [speech_16k(speak_wav(text, folder / f"en{i}.wav", voice, pitch=pitch)), pause]
    return _meeting(folder / "english-meeting.wav", pieces, turns)


def mandarin_meeting(folder: Path, turns: Sequence[tuple[int, str]] = MANDARIN_TURNS,
                     pause: float = 0.7) -> Meeting:
    """Two Mandarin espeak-ng voices (a low male, a high female variant)."""
    pieces: list = [0.5]
    for i, (who, text) in enumerate(turns):
        variant, pitch = MANDARIN_VOICES[who]
        pieces += [speech_16k(speak_mandarin(text, folder / f"zh{i}.wav", variant=variant,
                                             pitch=pitch)), pause]
    return _meeting(folder / "mandarin-meeting.wav", pieces, turns)


def _meeting(path: Path, pieces: list, turns: Sequence[tuple[int, str]]) -> Meeting:
    wav, spans = compose(pieces, path)
    return Meeting(wav, [(a, b, who) for (a, b), (who, _t) in zip(spans, turns, strict=True)],
                   [t for _w, t in turns])


def der(reference: Sequence[tuple[float, float, int]],
        hypothesis: Sequence[tuple[float, float, int]], collar: float = 0.25,
        step: float = 0.01) -> float:
    """Diarization error rate: (missed + false alarm + confused speech) / reference speech,
    frames of `step` seconds, speakers mapped one-to-one at best (Hungarian), `collar` seconds
    either side of every reference boundary not scored (the NIST convention)."""
    from scipy.optimize import linear_sum_assignment

    end = max(e for _s, e, _k in [*reference, *hypothesis])
    n = int(np.ceil(end / step)) + 1
    ref = np.zeros(n, int)
    hyp = np.zeros(n, int)
    scored = np.ones(n, bool)
    for s, e, k in reference:
        ref[int(s / step):int(e / step)] = k
        for t in (s, e):
            scored[max(0, int((t - collar) / step)):int((t + collar) / step)] = False
    for s, e, k in hypothesis:
        hyp[int(s / step):int(e / step)] = k
    ref, hyp = ref[scored], hyp[scored]
    rs, hs = sorted(set(ref) - {0}), sorted(set(hyp) - {0})
    both = (ref > 0) & (hyp > 0)
    matched = 0
    if rs and hs:
        overlap = np.array([[np.sum(both & (ref == r) & (hyp == h)) for h in hs] for r in rs])
        rows, cols = linear_sum_assignment(-overlap)
        matched = int(overlap[rows, cols].sum())
    total = int(np.sum(ref > 0))
    missed = int(np.sum((ref > 0) & (hyp == 0)))
    false_alarm = int(np.sum((ref == 0) & (hyp > 0)))
    confused = int(np.sum(both)) - matched
    return (missed + false_alarm + confused) / max(total, 1)
