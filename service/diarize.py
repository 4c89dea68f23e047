"""Who spoke when: speaker turns inside the VAD's speech regions.

Why this way: every diarization toolkit our peers use needs a gated hub download (pyannote) or
a heavy toolkit (NeMo). Resemblyzer's GE2E speaker encoder ships inside its wheel (17 MB,
Apache-2.0), runs on the CPU at a fraction of real time and gives 256-d voice embeddings; we
embed 1.6-s windows every 0.25 s inside the speech regions we already have (our VAD, not
Resemblyzer's webrtcvad), cluster them with scikit-learn (average linkage on cosine distance:
a distance threshold when the number of speakers is unknown, else exactly N clusters), smooth
single-window flips and cut the regions into turns. Another encoder (a local pyannote or CAM++
model) can be plugged in behind `Encoder`. Worker-only (imports torch).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import numpy as np

from .vad import Region

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
STEP_S = 0.25  # one embedding every 0.25 s: turn boundaries land within ~0.13 s
WINDOW_S = 1.6  # Resemblyzer's partial utterance (160 mel frames of 10 ms)
# Average-linkage cosine distance above which two groups are different people. Measured on
# espeak-ng meetings (bench/diarize.py): 0.35 already merged the two closest of three voices
# on a 15-s meeting, 0.40 on every meeting; below 0.3 one voice splits. An extra label is the
# lesser harm: it stays near the low end.
AUTO_DISTANCE = 0.3
# A "speaker" never heard this long at a stretch is windows straddling a change of voice (1-1.5
# s at each change, measured) or one odd sentence (1.9 s on a 3-minute meeting). The price:
# someone who only ever says a word or two is given to the nearest voice.
MIN_TURN_S = 2.0
SMOOTH_WINDOWS = 5  # majority over 5 windows (1.25 s): one odd window is not a turn
MAX_SPEAKERS = 20
BATCH = 256  # windows per encoder call
# Average linkage needs all pairwise distances (n² memory): beyond this many windows (~8 min
# of speech) every k-th window is clustered and the others join the nearest cluster centre.
MAX_CLUSTERED = 2000

__all__ = ["Encoder", "Turn", "diarize", "resemblyzer_encoder"]


@dataclass(frozen=True)
class Turn:
    """One speaker talking, seconds from the start of the file. Speakers count from 1 in the
    order they are first heard."""

    start: float
    end: float
    speaker: int


class Encoder(Protocol):
    """Voice embeddings of 16 kHz windows (unit length rows): the pluggable part."""

    def embed(self, windows: Sequence[np.ndarray]) -> np.ndarray: ...


class _Resemblyzer:
    """Resemblyzer's GE2E encoder on the CPU, fed mel frames of the windows in one batch."""

    def __init__(self) -> None:
        from resemblyzer import VoiceEncoder

        self.model = VoiceEncoder("cpu", verbose=False)

    def embed(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        import torch
        from resemblyzer import normalize_volume, wav_to_mel_spectrogram

        out = []
        for i in range(0, len(windows), BATCH):  # bounded memory for a long file
            mels = [wav_to_mel_spectrogram(normalize_volume(w, -30, increase_only=True))
                    for w in windows[i:i + BATCH]]
            batch = np.zeros((len(mels), max(len(m) for m in mels), mels[0].shape[1]),
                             np.float32)
            for j, m in enumerate(mels):  # a short region's window is padded with silence
                batch[j, :len(m)] = m
            with torch.inference_mode():
                out.append(self.model(torch.from_numpy(batch)).numpy())
        return np.concatenate(out)


@lru_cache(maxsize=1)
def resemblyzer_encoder() -> Encoder:
    """The built-in encoder (loaded once per worker process)."""
    return _Resemblyzer()


def region_audio(audio: np.ndarray | Iterable[np.ndarray],
                 regions: Sequence[Region]) -> Iterator[tuple[Region, np.ndarray]]:
    """Each region's samples, in order, from one array or from streamed blocks
    (``audio.stream``): only the blocks of the region at hand are held, so memory does not
    grow with the file's length."""
    if isinstance(audio, np.ndarray):
        for r in regions:
            yield r, audio[int(r.start * SAMPLE_RATE):int(r.end * SAMPLE_RATE)]
        return
    blocks = iter(audio)
    held: list[np.ndarray] = []
    held_start = 0  # sample index of held[0][0]
    held_len = 0
    for r in regions:
        a, b = int(r.start * SAMPLE_RATE), int(r.end * SAMPLE_RATE)
        while held_start + held_len < b:
            block = next(blocks, None)
            if block is None:
                break
            held.append(block)
            held_len += len(block)
            while held and held_start + len(held[0]) <= a:  # wholly before the region
                held_start += len(held[0])
                held_len -= len(held[0])
                held.pop(0)
        joined = np.concatenate(held) if held else np.zeros(0, np.float32)
        yield r, joined[max(0, a - held_start):b - held_start]
        tail = joined[b - held_start:].copy()  # a copy: a view would keep the region alive
        held, held_start, held_len = [tail], b, len(tail)


def _windows(audio: np.ndarray | Iterable[np.ndarray], regions: Sequence[Region]
             ) -> Iterator[tuple[np.ndarray, tuple[float, float]]]:
    """Each window's audio and the span of the file it speaks for (its centre ± STEP/2;
    the first and last window of a region reach the region's edges)."""
    for r, samples in region_audio(audio, regions):
        if r.end - r.start < 0.3:
            continue
        starts, centres = [r.start], [(r.start + r.end) / 2]
        if r.end - r.start > WINDOW_S:
            starts = [float(s) for s in np.arange(r.start, r.end - WINDOW_S, STEP_S)]
            starts.append(r.end - WINDOW_S)
            centres = [s + WINDOW_S / 2 for s in starts]
        length = int(min(WINDOW_S, r.end - r.start) * SAMPLE_RATE)
        for i, (s, c) in enumerate(zip(starts, centres, strict=True)):
            a = int((s - r.start) * SAMPLE_RATE)
            lo = r.start if i == 0 else (centres[i - 1] + c) / 2
            hi = r.end if i == len(starts) - 1 else (c + centres[i + 1]) / 2
            yield samples[a:a + length], (float(lo), float(hi))


def _cluster(emb: np.ndarray, speakers: int | None) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering

    if len(emb) == 1 or speakers == 1:
        return np.zeros(len(emb), int)
    step = -(-len(emb) // MAX_CLUSTERED)
    sample = emb[::step]
    if speakers is None:
        algo = AgglomerativeClustering(n_clusters=None, distance_threshold=AUTO_DISTANCE,
                                       metric="cosine", linkage="average")
    else:
        algo = AgglomerativeClustering(n_clusters=min(speakers, len(sample)), metric="cosine",
                                       linkage="average")
    labels = algo.fit_predict(sample)
    if step == 1:
        return labels
    keys = sorted(set(labels))
    centres = np.stack([sample[labels == k].mean(axis=0) for k in keys])
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return np.array(keys)[np.argmax(emb @ centres.T, axis=1)]


def _longest_runs(labels: np.ndarray, spans: list[tuple[float, float]]) -> dict[int, float]:
    """Per cluster, its longest stretch of consecutive windows, in seconds."""
    best: dict[int, float] = {}
    run_start = 0
    for i in range(len(labels)):
        last = i == len(labels) - 1
        if last or labels[i + 1] != labels[i] or spans[i + 1][0] != spans[i][1]:
            k = int(labels[i])
            best[k] = max(best.get(k, 0.0), spans[i][1] - spans[run_start][0])
            run_start = i + 1
    return best


def _absorb_small(labels: np.ndarray, emb: np.ndarray, spans: list[tuple[float, float]],
                  keep: int | None) -> np.ndarray:
    """A cluster never heard for MIN_TURN_S at a stretch joins the nearest real one: windows
    straddling a change of voice are a mix of both and cluster together, at every change
    (not when the number of speakers is fixed)."""
    if keep is not None:
        return labels
    runs = _longest_runs(labels, spans)
    big = [k for k, s in runs.items() if s >= MIN_TURN_S]
    if not big or len(big) == len(runs):
        return labels
    centres = {k: emb[labels == k].mean(axis=0) for k in big}
    out = labels.copy()
    for i, lab in enumerate(labels):
        if lab not in centres:
            out[i] = max(big, key=lambda k: float(emb[i] @ centres[k]))
    return out


def _smooth(labels: np.ndarray, spans: list[tuple[float, float]]) -> np.ndarray:
    """Majority label over SMOOTH_WINDOWS neighbouring windows of the same region."""
    out = labels.copy()
    half = SMOOTH_WINDOWS // 2
    for i in range(len(labels)):
        lo, hi = i, i
        while lo > 0 and i - lo < half and spans[lo - 1][1] == spans[lo][0]:
            lo -= 1
        while hi < len(labels) - 1 and hi - i < half and spans[hi][1] == spans[hi + 1][0]:
            hi += 1
        values, counts = np.unique(labels[lo:hi + 1], return_counts=True)
        if counts.max() > counts[values == labels[i]][0]:
            out[i] = values[counts.argmax()]
    return out


def diarize(audio: np.ndarray | Iterable[np.ndarray], regions: Sequence[Region],
            speakers: int | None = None, encoder: Encoder | None = None) -> list[Turn]:
    """Speaker turns of 16 kHz mono audio (an array, or streamed blocks) inside `regions`;
    `speakers` fixes their number (None: estimated). Turns are sorted, never overlap, and cover
    the regions."""
    spans: list[tuple[float, float]] = []
    parts, batch = [], []
    for window, span in _windows(audio, regions):  # embedded a batch at a time, as it streams
        if encoder is None:
            encoder = resemblyzer_encoder()
        batch.append(window)
        spans.append(span)
        if len(batch) == BATCH:
            parts.append(encoder.embed(batch))
            batch = []
    if batch:
        parts.append(encoder.embed(batch))
    if not spans:
        return []
    emb = np.concatenate(parts)
    labels = _cluster(emb, speakers)
    labels = _absorb_small(labels, emb, spans, speakers)
    labels = _smooth(labels, spans)
    order: dict[int, int] = {}  # cluster → speaker number, by first appearance
    turns: list[Turn] = []
    for (start, end), lab in zip(spans, labels, strict=True):
        n = order.setdefault(int(lab), len(order) + 1)
        if turns and turns[-1].speaker == n and abs(turns[-1].end - start) < 1e-6:
            turns[-1] = Turn(turns[-1].start, end, n)
        else:
            turns.append(Turn(start, end, n))
    log.info("speakers: %d in %d turn(s) from %d windows", len(order), len(turns), len(emb))
    return [Turn(round(t.start, 3), round(t.end, 3), t.speaker) for t in turns]
