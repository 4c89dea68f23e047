"""Who spoke when, on real speech: espeak-ng dialogues with known turns (tests/dialogue.py),
our VAD, the real Resemblyzer encoder from its wheel, scikit-learn clustering.

DER bounds (collar 0.25 s, as NIST scores it), measured here with the defaults (bench/diarize.py):
English three voices with pauses 0.034, Mandarin two voices 0.022, both without pauses between
turns (the change of speaker falls inside one speech region) 0.025 and 0.013. Most of what is
left is the VAD's padding scored as false alarm. The bound is 0.10: about three times the worst.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service import diarize, vad
from tests.dialogue import (
    ENGLISH_TURNS,
    Meeting,
    der,
    english_meeting,
    mandarin_meeting,
)
from tests.speech import read_wav

DER_BOUND = 0.10


def _audio(meeting: Meeting) -> tuple[np.ndarray, list[vad.Region]]:
    samples, rate = read_wav(meeting.path)
    assert rate == 16000
    return samples, vad.speech_regions(samples, vad.VadOptions())


def _hyp(turns: list[diarize.Turn]) -> list[tuple[float, float, int]]:
    return [(t.start, t.end, t.speaker) for t in turns]


@pytest.fixture(scope="module")
def english(tmp_path_factory: pytest.TempPathFactory) -> tuple[Meeting, np.ndarray, list]:
    meeting = english_meeting(tmp_path_factory.mktemp("en"))
    return (meeting, *_audio(meeting))


@pytest.fixture(scope="module")
def mandarin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Meeting, np.ndarray, list]:
    meeting = mandarin_meeting(tmp_path_factory.mktemp("zh"))
    return (meeting, *_audio(meeting))


def test_three_english_voices_are_counted_and_their_turns_found(english) -> None:
    meeting, samples, regions = english
    turns = diarize.diarize(samples, regions)
    assert {t.speaker for t in turns} == {1, 2, 3}
    error = der(meeting.turns, _hyp(turns))
    print(f"English, 3 voices: DER {error:.3f}")
    assert error < DER_BOUND
    # numbered in order of appearance, like the reference: 1, 2, 3, 1, 2, 3
    assert [t.speaker for t in turns] == [who for _s, _e, who in meeting.turns]


def test_two_mandarin_voices(mandarin) -> None:
    meeting, samples, regions = mandarin
    turns = diarize.diarize(samples, regions)
    assert len({t.speaker for t in turns}) == meeting.speakers == 2
    error = der(meeting.turns, _hyp(turns))
    print(f"Mandarin, 2 voices: DER {error:.3f}")
    assert error < DER_BOUND


def test_a_fixed_number_of_speakers_is_obeyed(english) -> None:
    """`speakers: 2` on a three-voice meeting: exactly two labels, every turn still one of
    them (the user said so; the closest two voices share a label)."""
    _meeting, samples, regions = english
    turns = diarize.diarize(samples, regions, speakers=2)
    assert {t.speaker for t in turns} == {1, 2}
    assert diarize.diarize(samples, regions, speakers=1)[0].speaker == 1
    assert {t.speaker for t in diarize.diarize(samples, regions, speakers=1)} == {1}


def test_a_change_of_speaker_without_a_pause(tmp_path: Path) -> None:
    """Turns 0.1 s apart are one speech region for the VAD: the change is found inside it."""
    meeting = english_meeting(tmp_path, ENGLISH_TURNS[:4], pause=0.1)
    samples, regions = _audio(meeting)
    assert len(regions) == 1
    turns = diarize.diarize(samples, regions)
    assert len({t.speaker for t in turns}) == 3
    error = der(meeting.turns, _hyp(turns))
    print(f"English, no pauses: DER {error:.3f}")
    assert error < DER_BOUND
    for (_s, end, _k), turn in zip(meeting.turns, turns, strict=False):
        assert abs(turn.end - end) < 0.6  # each boundary within ~2 windows of the truth


def test_turns_are_ordered_cover_the_speech_and_never_overlap(english) -> None:
    _meeting, samples, regions = english
    turns = diarize.diarize(samples, regions)
    assert all(a.end <= b.start + 1e-6 for a, b in zip(turns, turns[1:], strict=False))
    covered = sum(t.end - t.start for t in turns)
    assert covered == pytest.approx(vad.total_speech(regions), abs=0.05)
    assert diarize.diarize(samples, []) == []


def test_der_scores_a_known_case() -> None:
    """The scorer itself: a perfect answer, swapped labels (not an error), a missed half."""
    ref = [(0.0, 10.0, 1), (10.0, 20.0, 2)]
    assert der(ref, ref) == 0
    assert der(ref, [(0.0, 10.0, 7), (10.0, 20.0, 3)]) == 0
    assert der(ref, [(0.0, 10.0, 1)], collar=0) == pytest.approx(0.5, abs=0.01)
    assert der(ref, [(0.0, 20.0, 1)], collar=0) == pytest.approx(0.5, abs=0.01)


def test_a_long_file_clusters_a_sample_and_assigns_the_rest(english, monkeypatch) -> None:
    """Beyond MAX_CLUSTERED windows (n² memory) every k-th window is clustered and the rest
    join the nearest centre: the same answer on this meeting with the limit set low."""
    meeting, samples, regions = english
    monkeypatch.setattr(diarize, "MAX_CLUSTERED", 40)
    turns = diarize.diarize(samples, regions)
    assert len({t.speaker for t in turns}) == 3
    assert der(meeting.turns, _hyp(turns)) < DER_BOUND


def test_streamed_audio_gives_the_same_turns(english) -> None:
    """The worker streams a long file (audio.stream) and keeps none of it: region by region
    from blocks gives exactly the turns of the whole array."""
    _meeting, samples, regions = english
    sizes = np.random.default_rng(3).integers(500, 40_000, size=len(samples) // 500)
    cuts = np.cumsum(sizes)
    blocks = np.split(samples, cuts[cuts < len(samples)])
    for (r, a), (_r, b) in zip(diarize.region_audio(iter(blocks), regions),
                               diarize.region_audio(samples, regions), strict=True):
        assert np.array_equal(a, b), r
    assert diarize.diarize(iter(blocks), regions) == diarize.diarize(samples, regions)
