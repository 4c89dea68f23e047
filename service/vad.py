"""Voice activity detection: where in a file someone speaks (silero-vad; its wheel ships the model).

Why: Whisper invents text in silence and music (subtitle credits, "please subscribe", loops)
and spends a full 30-s window of work on every silent stretch. Decoding only the speech regions
(`clip_timestamps`) removes both problems at their root; the regions also let the guards in
`postprocess` drop whatever still lands outside speech, and let language detection listen to
speech instead of a leading silence. Worker-only (silero's ONNX model on onnxruntime).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000

__all__ = ["Region", "VadOptions", "speech_regions", "total_speech", "warm_up"]


@dataclass(frozen=True)
class Region:
    """A stretch of speech, in seconds from the start of the file (padding included)."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class VadOptions:
    threshold: float = 0.5
    min_silence_ms: int = 500
    speech_pad_ms: int = 400
    min_speech_ms: int = 250


def speech_regions(samples: np.ndarray, options: VadOptions) -> list[Region]:
    """Speech regions of 16 kHz mono audio: padded, merged where the padding overlaps, sorted.

    An empty list means no speech at all (the worker then writes an empty transcript without
    decoding anything).
    """
    import torch
    from silero_vad import get_speech_timestamps

    if len(samples) == 0:
        return []
    model = _model()  # get_speech_timestamps resets its state first: one model per process
    stamps = get_speech_timestamps(
        torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)), model,
        threshold=options.threshold, sampling_rate=SAMPLE_RATE,
        min_speech_duration_ms=options.min_speech_ms,
        min_silence_duration_ms=options.min_silence_ms,
        speech_pad_ms=options.speech_pad_ms,
    )
    duration = len(samples) / SAMPLE_RATE
    regions: list[Region] = []
    for s in stamps:
        start = max(0.0, s["start"] / SAMPLE_RATE)
        end = min(duration, s["end"] / SAMPLE_RATE)
        if regions and start <= regions[-1].end:
            regions[-1] = Region(regions[-1].start, max(regions[-1].end, end))
        elif end > start:
            regions.append(Region(start, end))
    log.info("speech: %d region(s), %.1f of %.1f s", len(regions), total_speech(regions),
             duration)
    return [Region(round(r.start, 3), round(r.end, 3)) for r in regions]


@lru_cache(maxsize=1)
def _model():  # noqa: ANN202 - silero's OnnxWrapper
    """silero's ONNX model on one CPU thread (onnxruntime, never a GPU provider).

    Why not its TorchScript model: torch runs it with an OpenMP thread pool, and a faster-whisper
    worker holds a second OpenMP runtime (CTranslate2's own libgomp). Their idle threads spin
    and took the cores from each other: after CTranslate2 had run, the TorchScript VAD of a 60-s
    clip took 5–10 s (4–7 s of CPU) instead of 0.5 s, in every warm task after the first.
    OMP_WAIT_POLICY=PASSIVE cured that but doubled openai-whisper's own time (tiny.en, 4 × 60 s
    through the service: 11.8 → 26 s), and ACTIVE burns a core while a warm worker idles. The
    ONNX model gives the same regions (the bench clips: identical) in 0.33 s, whatever ran before,
    on one core, and needs no 4-s TorchScript warm-up (bench/engines.py)."""
    from silero_vad import load_silero_vad

    return load_silero_vad(onnx=True)


def warm_up() -> None:
    """Load the model and run it once, in a worker before it has a job (a pre-started worker
    hides the onnxruntime session's creation)."""
    speech_regions(np.zeros(SAMPLE_RATE, dtype=np.float32), VadOptions())


def total_speech(regions: list[Region]) -> float:
    return sum(r.duration for r in regions)
