"""Long files in pieces: cut the decoded audio stream at pauses, stitch the results back.

Why: a whole-file array of samples and its spectrogram cost about 2.1 GB per audio hour, so a
6-hour recording needed 12 GB before Whisper even started. Taking the stream a piece at a time
(a few minutes, cut in a pause the VAD found) keeps a worker's memory the same for any length.
Each piece is transcribed on its own; segment times are shifted by the piece's offset, so the
stitched result is what one whole-file pass gives (the tests compare the two).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .vad import Region

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
# Cuts fall on multiples of both the spectrogram hop (160 samples, whisper.audio.HOP_LENGTH)
# and silero-vad's window (512): a piece's frames and VAD windows are then the whole file's.
ALIGN = 2560
# A speech region ending at least this far before the end of the buffer really ended (the
# VAD saw the pause after it); nearer the end, the speech may go on in audio not read yet.
GUARD_SECONDS = 3.0
PAUSE_MARGIN = 1.0  # a cut in a pause stays this far before the next speech (or in the middle)

__all__ = ["Piece", "split", "shift_segments"]

FindRegions = Callable[[np.ndarray], list[Region]]


@dataclass(frozen=True)
class Piece:
    """A stretch of the file. `regions` are its speech, in seconds from the piece's start."""

    offset: float  # seconds from the start of the file
    samples: np.ndarray
    regions: list[Region]

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    def file_regions(self) -> list[Region]:
        return [Region(round(r.start + self.offset, 3), round(r.end + self.offset, 3))
                for r in self.regions]


def split(blocks: Iterable[np.ndarray], piece_seconds: float,
          find_regions: FindRegions) -> Iterator[Piece]:
    """Pieces of about `piece_seconds` (at most 2×), each cut in a pause; 0 = one piece.

    Only one piece (plus the few seconds carried into the next) is held at a time. A stretch
    with no pause in its second half (continuous speech) is cut where the buffer ends, with a
    warning in the log.
    """
    limit = int(piece_seconds * SAMPLE_RATE) if piece_seconds > 0 else 0
    pending: list[np.ndarray] = []
    held = 0
    consumed = 0  # samples already handed out in earlier pieces
    for block in blocks:
        pending.append(block)
        held += len(block)
        if not limit or held < limit:
            continue
        buffer = np.concatenate(pending)
        pending.clear()
        regions = find_regions(buffer)
        cut = _cut(regions, len(buffer) / SAMPLE_RATE)
        steps = len(buffer) // ALIGN if cut is None else round(cut * SAMPLE_RATE / ALIGN)
        at = min(len(buffer) // ALIGN, steps) * ALIGN
        if cut is None:
            log.warning("no pause in %.0f s of speech at %.0f s: cutting mid-speech",
                        len(buffer) / SAMPLE_RATE, consumed / SAMPLE_RATE)
        end = at / SAMPLE_RATE
        inside = [Region(r.start, min(r.end, end)) for r in regions if r.start < end]
        yield Piece(consumed / SAMPLE_RATE, buffer[:at], inside)
        carry = buffer[at:].copy()  # a copy: the piece's memory is freed with the piece
        del buffer
        consumed += at
        pending, held = ([carry], len(carry)) if len(carry) else ([], 0)
    if held or not consumed:
        buffer = np.concatenate(pending) if pending else np.zeros(0, dtype=np.float32)
        yield Piece(consumed / SAMPLE_RATE, buffer, find_regions(buffer))


def _cut(regions: list[Region], length: float) -> float | None:
    """Where to end a full buffer of `length` seconds: in the last pause before the guard
    zone at its end, close to the speech that follows it; None when the only pauses are in
    the first half (cut at the end instead: the buffer must not keep growing)."""
    safe = length - GUARD_SECONDS
    settled = [r for r in regions if r.end <= safe]
    previous = settled[-1].end if settled else 0.0
    following = [r.start for r in regions if r.start >= previous and r.end > safe]
    if not following or following[0] >= safe:
        return safe  # silence from the last settled speech up to the guard zone
    cut = following[0] - min(PAUSE_MARGIN, (following[0] - previous) / 2)
    return cut if cut >= length / 2 else None


def shift_segments(segments: Iterable[dict[str, Any]], offset: float) -> list[dict[str, Any]]:
    """A piece's segments (and words) in file time."""
    if not offset:
        return list(segments)
    out = []
    for seg in segments:
        seg = {**seg, "start": seg["start"] + offset, "end": seg["end"] + offset}
        if "seek" in seg:
            seg["seek"] = seg["seek"] + round(offset * 100)  # mel frames (10 ms)
        if seg.get("words"):
            seg["words"] = [{**w, "start": w["start"] + offset, "end": w["end"] + offset}
                            for w in seg["words"]]
        out.append(seg)
    return out
