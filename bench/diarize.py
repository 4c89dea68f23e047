"""Speaker labels: diarization error rate and speed on espeak-ng meetings with known turns.

    python bench/diarize.py [--minutes 3]

Meetings (tests/dialogue.py): three English voices and two Mandarin voices, each with pauses
between turns and without (the change of speaker then falls inside one VAD region), plus one
long meeting of about --minutes for the speed. Prints, per meeting, the speakers found, DER
(collar 0.25 s) and seconds of work; the voices' cosine similarities (whole sentences); the
last line is `RESULT der=<mean DER> rtf=<diarize seconds per audio second>`. CPU only.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service import diarize, vad  # noqa: E402
from tests.dialogue import (  # noqa: E402
    ENGLISH_TURNS,
    ENGLISH_VOICES,
    MANDARIN_TURNS,
    der,
    english_meeting,
    mandarin_meeting,
)
from tests.speech import read_wav, speak_wav, speech_16k  # noqa: E402


def _cosines(folder: Path) -> tuple[float, float]:
    """Lowest cosine within a voice, highest across voices (English, whole sentences)."""
    enc = diarize.resemblyzer_encoder()
    emb = {}
    for who, (voice, pitch) in ENGLISH_VOICES.items():
        for i, (_w, text) in enumerate(ENGLISH_TURNS):
            emb[who, i] = enc.embed([speech_16k(speak_wav(text, folder / f"c{who}{i}.wav",
                                                          voice, pitch=pitch))])[0]
    within = min(float(emb[w, i] @ emb[w, j]) for w in ENGLISH_VOICES
                 for i in range(len(ENGLISH_TURNS)) for j in range(i))
    across = max(float(emb[a, i] @ emb[b, j]) for a in ENGLISH_VOICES for b in ENGLISH_VOICES
                 if a < b for i in range(len(ENGLISH_TURNS)) for j in range(len(ENGLISH_TURNS)))
    return within, across


EXTRA = ["Can we look at the numbers from last week first?",
         "The customer asked for a demo on Tuesday afternoon.",
         "I think we should hire two more people for support.",
         "Let us keep that for the next meeting.",
         "The new release fixed most of the crashes.",
         "Who is going to write the report for the board?",
         "We are still waiting for the legal review.",
         "That sounds good to me, let us do it."]


def _long(folder: Path, minutes: float) -> tuple[Path, list]:
    """The three English voices in a random order of turns (never the same voice twice in a
    row), sentences reused across turns, pauses of 0.3-1.2 s, until about `minutes`."""
    from tests.speech import write_wav

    rng = np.random.default_rng(7)
    texts = [t for _w, t in ENGLISH_TURNS] + EXTRA
    cache: dict[tuple[int, int], np.ndarray] = {}
    pieces, truth, t, last = [], [], 0.0, 0
    while t < minutes * 60:
        who = int(rng.choice([w for w in ENGLISH_VOICES if w != last]))
        k = int(rng.integers(len(texts)))
        if (who, k) not in cache:
            voice, pitch = ENGLISH_VOICES[who]
            cache[who, k] = speech_16k(speak_wav(texts[k], folder / f"{who}-{k}.wav", voice,
                                                 pitch=pitch))
        audio, pause = cache[who, k], float(rng.uniform(0.3, 1.2))
        pieces += [audio, np.zeros(int(pause * 16000), np.float32)]
        truth.append((t, t + len(audio) / 16000, who))
        t += len(audio) / 16000 + pause
        last = who
    return write_wav(folder / "long.wav", np.concatenate(pieces), 16000), truth


def run(folder: Path, minutes: float) -> tuple[float, float]:
    cases = [("English, 3 voices, pauses", english_meeting(folder / "a")),
             ("English, 3 voices, no pauses", english_meeting(folder / "b", ENGLISH_TURNS,
                                                              pause=0.1)),
             ("Mandarin, 2 voices, pauses", mandarin_meeting(folder / "c")),
             ("Mandarin, 2 voices, no pauses", mandarin_meeting(folder / "d", MANDARIN_TURNS,
                                                                pause=0.1))]
    diarize.resemblyzer_encoder()  # loaded once per worker: not part of a file's time
    errors = []
    for name, meeting in cases:
        samples, _ = read_wav(meeting.path)
        regions = vad.speech_regions(samples, vad.VadOptions())
        t0 = time.perf_counter()
        turns = diarize.diarize(samples, regions)
        took = time.perf_counter() - t0
        error = der(meeting.turns, [(t.start, t.end, t.speaker) for t in turns])
        errors.append(error)
        found = len({t.speaker for t in turns})
        print(f"{name:32s} speakers {found} (true {meeting.speakers})  DER {error:.3f}  "
              f"{took:.2f} s for {len(samples) / 16000:.0f} s of audio")
    path, truth = _long(folder / "long", minutes)
    samples, _ = read_wav(path)
    regions = vad.speech_regions(samples, vad.VadOptions())
    t0, c0 = time.perf_counter(), time.process_time()
    turns = diarize.diarize(samples, regions)
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    audio = len(samples) / 16000
    error = der(truth, [(t.start, t.end, t.speaker) for t in turns])
    print(f"{'long meeting, 3 voices':32s} speakers {len({t.speaker for t in turns})} "
          f"(true 3)  DER {error:.3f}  {took:.1f} s for {audio / 60:.1f} min of audio = "
          f"{took / audio * 60:.1f} s per audio minute ({cpu / audio * 60:.1f} s of CPU; "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})")
    within, across = _cosines(folder / "cos")
    print(f"cosine (whole sentences): within a voice >= {within:.2f}, across voices "
          f"<= {across:.2f}")
    return float(np.mean(errors + [error])), took / audio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        mean_der, rtf = run(Path(tmp), args.minutes)
    print(f"RESULT der={mean_der:.3f} rtf={rtf:.4f}")


if __name__ == "__main__":
    main()
