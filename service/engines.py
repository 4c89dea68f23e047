"""The engine interface the worker calls: openai-whisper or faster-whisper behind one shape.

Why an interface: the worker's straight line (load → decode → speech regions → language →
prompt → transcribe → post-process → write) must not fork per runtime. Each engine takes the
same inputs (16 kHz samples, our silero speech regions, the built prompt, options.Decoding) and
returns openai-whisper's result dict (`text`, `segments`, `language`), which the one
post-processing stage (postprocess.apply) consumes; it never knows which engine ran.

Heavy imports (torch, whisper, ctranslate2) stay inside the engines' functions: the parent
imports this module only to name engines and precisions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from . import catalog
from .options import Decoding

OPENAI = catalog.OPENAI
FASTER = catalog.FASTER

ProgressCallback = Callable[[float], None]
Speech = Sequence[tuple[float, float]]

__all__ = ["FASTER", "OPENAI", "Engine", "get", "kind", "precision"]


class Engine(Protocol):
    """One Whisper runtime, used inside a worker process only."""

    name: str

    def load(self, name: str, models_dir: Path, device: str, allow_download: bool,
             opts: Decoding, threads: int) -> Any:
        """The model NAME from models_dir on device; engine.ModelNotAvailable says what to put
        where when it is not there."""
        ...

    def compute_type(self, model: Any) -> str:
        """What the loaded model computes in (fp16/fp32; CTranslate2's int8, float16, …)."""
        ...

    def multilingual(self, model: Any) -> bool: ...

    def seed(self) -> None:
        """Fix the random state temperature fallback samples from, once per file (not per
        piece: a long file in pieces then samples as one whole-file pass would)."""
        ...

    def detect_language(self, model: Any, samples: np.ndarray, speech: Speech | None,
                        allowed: Sequence[str] | None) -> tuple[str, float]:
        """(code, probability) from the first 30 s of speech, among `allowed` only."""
        ...

    def transcribe(self, model: Any, samples: np.ndarray, *, language: str | None, task: str,
                   prompt: str | None, speech: Speech | None, opts: Decoding,
                   progress: ProgressCallback) -> dict[str, Any]:
        """Decode the speech regions only (the whole file when `speech` is None), the prompt
        carried to every window; openai-whisper's result dict with times in the file."""
        ...


class OpenAIWhisper:
    """openai-whisper through service/engine.py (the design's default engine)."""

    name = OPENAI

    def load(self, name: str, models_dir: Path, device: str, allow_download: bool,
             opts: Decoding, threads: int) -> Any:
        from . import engine

        return engine.load_model(name, models_dir, device, allow_download)

    def compute_type(self, model: Any) -> str:
        return "fp16" if model.device.type == "cuda" else "fp32"

    def multilingual(self, model: Any) -> bool:
        return bool(getattr(model, "is_multilingual", True))

    def seed(self) -> None:
        import torch

        torch.manual_seed(0)

    def detect_language(self, model: Any, samples: np.ndarray, speech: Speech | None,
                        allowed: Sequence[str] | None) -> tuple[str, float]:
        from . import engine

        return engine.detect_language(model, samples, speech, allowed)

    def transcribe(self, model: Any, samples: np.ndarray, *, language: str | None, task: str,
                   prompt: str | None, speech: Speech | None, opts: Decoding,
                   progress: ProgressCallback) -> dict[str, Any]:
        from . import engine

        clips = "0" if not speech else [t for pair in speech for t in pair]
        return engine.transcribe(
            model, samples, language=language, task=task, initial_prompt=prompt,
            fp16=model.device.type == "cuda", progress=progress, clip_timestamps=clips,
            carry_initial_prompt=prompt is not None, **opts.whisper_options())


def get(name: str) -> Engine:
    """The engine called `name` (options.Decoding.engine has already validated it)."""
    if name == FASTER:
        from .fasterwhisper import FasterWhisper

        return FasterWhisper()
    return OpenAIWhisper()


def precision(opts: Decoding, on_gpu: bool = True) -> str:
    """The calibration key's precision for a task on a GPU, known before the worker starts:
    openai-whisper loads fp16; faster-whisper's compute type as `auto` resolves it there,
    with `-batchN` when batched (a batch of 8 windows needs ~1.3x the memory)."""
    if opts.engine != FASTER:
        return "fp16" if on_gpu else "fp32"
    from .fasterwhisper import batched, resolve_compute_type

    compute = resolve_compute_type(opts.compute_type, "cuda" if on_gpu else "cpu",
                                   opts.prefer_memory, supported=None)
    return f"{compute}-batch{opts.batch_size}" if batched(opts) else compute


def kind(defaults: Decoding, chosen: dict[str, Any]) -> dict[str, str]:
    """A task's engine and GPU precision (settings, then its own choices): what its VRAM
    estimate and calibration row depend on (planner, VramPool, Calibration)."""
    from .options import OptionsError, resolve

    try:
        opts = resolve(defaults, chosen or {})
    except OptionsError:  # refused at admission already; plan it like the defaults
        opts = defaults
    return {"engine": opts.engine, "precision": precision(opts)}
