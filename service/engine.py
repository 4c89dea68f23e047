"""The Whisper engine (openai-whisper): load a checkpoint, transcribe with a progress hook.

Used only inside a worker child process: torch and whisper are imported inside functions, so
importing this module costs nothing and never touches CUDA (the parent must not, DESIGN §5).

Loading rules (DESIGN §5, §8):

* ``models_dir/NAME.pt`` is always loaded by *file path*: passing an official name with
  ``download_root`` makes openai-whisper check the official SHA-256 and re-download over an
  imported file.
* Loading happens on the CPU; for CUDA everything but LayerNorm is cast to fp16 before the
  move, which needs ~2 bytes/parameter of VRAM instead of the ~6 of stock ``load_model``.
* Imported checkpoints carry ``alignment_heads_pairs``; they become the model's
  layers x heads mask (openai-whisper sets it only for official names).
"""

from __future__ import annotations

import contextlib
import http.client
import importlib
import logging
import os
import shutil
import types
import urllib.error
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import fsops

if TYPE_CHECKING:
    import torch
    import whisper

log = logging.getLogger(__name__)

__all__ = [
    "ModelNotAvailable",
    "cast_for_gpu",
    "detect_language",
    "language_warning",
    "load_model",
    "pick_device",
    "resolve_model",
    "set_alignment_heads_from_pairs",
    "transcribe",
]

ProgressCallback = Callable[[float], None]

_DOWNLOAD_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError)


STALL_WINDOWS = 50
STUCK_MESSAGE = ("Whisper stopped advancing through the audio (it decoded the same window 50 "
                 "times); the task was stopped instead of running forever.")


class EngineStuck(RuntimeError):
    """openai-whisper's decoding loop no longer advances (seek does not move)."""


class ModelNotAvailable(Exception):
    """The requested model cannot be loaded; the message tells the user what to put where.

    Built from a single message string so it pickles across processes unchanged.
    """


def resolve_model(name: str, models_dir: Path) -> Path | None:
    """models_dir/NAME.pt if that file exists, else None (also for names that are paths)."""
    if not _is_plain_name(name):
        return None
    path = Path(models_dir) / f"{name}.pt"
    return path if path.is_file() else None


def pick_device() -> str:
    """"cuda" when this process sees a GPU, else "cpu" (child process only: it touches CUDA)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(name: str, models_dir: Path, device: str,
               allow_download: bool = True) -> whisper.Whisper:
    """Load NAME from models_dir (or download an official model there) onto device."""
    import whisper

    models_dir = Path(models_dir)
    if not _is_plain_name(name):
        raise ModelNotAvailable(
            f"'{name}' is not a model name: use a plain name such as 'small' or 'large-v3', "
            f"whose file NAME.pt lives in {models_dir}."
        )
    path = resolve_model(name, models_dir)
    if path is not None:
        model = _load_file(name, path)
    elif name in whisper.available_models() and allow_download:
        model = _download_official(name, models_dir)
    else:
        reason = "downloading is switched off" if name in whisper.available_models() else None
        raise ModelNotAvailable(_not_available_message(name, models_dir, reason))
    return _place(model, device)


def cast_for_gpu(model: torch.nn.Module) -> torch.nn.Module:
    """Cast every floating parameter to fp16 except LayerNorm's, in place; return the model.

    openai-whisper's LayerNorm runs in fp32 (``x.float()``) and needs fp32 weights; every other
    layer casts its weights to the input dtype anyway, so fp16 storage changes no result
    while halving memory. Buffers (sinusoid positions, causal mask) stay as they are.
    """
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            continue
        for param in module.parameters(recurse=False):
            if param.is_floating_point():
                param.data = param.data.to(torch.float16)
    return model


def set_alignment_heads_from_pairs(model: whisper.Whisper, pairs: Iterable[Iterable[int]]) -> None:
    """Register the (layer, head) pairs as the boolean mask word timestamps use.

    Mirrors ``Whisper.set_alignment_heads`` (a sparse, non-persistent buffer), which itself
    only accepts openai's base85+gzip dump.
    """
    import torch

    dims = model.dims
    mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
    for layer, head in pairs:
        mask[int(layer), int(head)] = True
    model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)


def transcribe(model: whisper.Whisper, audio: np.ndarray, *, language: str | None,
               task: str, initial_prompt: str | None, fp16: bool,
               progress: ProgressCallback | None, **options: Any) -> dict[str, Any]:
    """Transcribe 16 kHz mono float32 audio; return openai-whisper's result dict.

    Audio stays a NumPy array so the whole-file STFT runs on the CPU (a CUDA tensor would
    make VRAM grow with duration). ``progress`` gets non-decreasing values in 0..1 and a
    final 1.0; an exception raised by it aborts the transcription (usable for cancelling).
    Extra ``options`` (word_timestamps, beam_size, temperature, ...) go to model.transcribe.
    """
    samples = np.ascontiguousarray(audio, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"expected mono audio (1-D samples), got shape {samples.shape}")
    use_fp16 = bool(fp16) and model.device.type == "cuda"  # fp16 on CPU only logs a warning
    if isinstance(options.get("clip_timestamps"), list):
        options["clip_timestamps"] = clips_within(options["clip_timestamps"], len(samples))
    with _progress_hook(progress or _ignore):  # always installed: it also detects a stall
        result = model.transcribe(samples, verbose=None, language=language, task=task,
                                  initial_prompt=initial_prompt, fp16=use_fp16, **options)
    if progress is not None:
        progress(1.0)
    return result


def detect_language(model: whisper.Whisper, samples: np.ndarray,
                    speech: Sequence[tuple[float, float]] | None,
                    allowed: Sequence[str] | None) -> tuple[str, float]:
    """(language code, probability) from the first 30 s of *speech*, among `allowed` only.

    Whisper's own detection listens to the first 30 s of the file: a recording that starts
    with silence or music gets a wrong language. With VAD regions the speech is cut out and
    joined first. An English-only model always answers "en".
    """
    import torch
    import whisper

    if not model.is_multilingual:
        return "en", 1.0
    rate = whisper.audio.SAMPLE_RATE
    if speech:
        pieces, total = [], 0
        for start, end in speech:
            piece = samples[int(start * rate):int(end * rate)]
            pieces.append(piece)
            total += len(piece)
            if total >= whisper.audio.N_SAMPLES:
                break
        clip = np.concatenate(pieces) if pieces else samples
    else:
        clip = samples
    clip = whisper.audio.pad_or_trim(np.ascontiguousarray(clip, dtype=np.float32))
    mel = whisper.audio.log_mel_spectrogram(clip, model.dims.n_mels).to(model.device)
    if model.device.type == "cuda":
        mel = mel.half()
    with torch.no_grad():
        _, probs = model.detect_language(mel)
    candidates = {k: v for k, v in probs.items() if not allowed or k in allowed}
    if not candidates:
        candidates = probs
    best = max(candidates, key=candidates.get)
    return best, float(candidates[best])


def language_warning(model_name: str, multilingual: bool, language: str | None) -> str | None:
    """A plain warning when an English-only model is asked for another language (it would
    silently write English under that label)."""
    if multilingual or language in (None, "en"):
        return None
    return (f"The model {model_name} only knows English, but the language {language!r} was "
            f"asked for: the transcript is English (or a guess in English letters). Use a "
            f"multilingual model such as {model_name.removesuffix('.en')}.")


def clips_within(clips: Sequence[float], n_samples: int) -> list[float]:
    """Clip times whisper can seek to: inside the mel frames it has, on frame boundaries, no
    empty clip. A clip ending even one frame past the audio (VAD ends at the last sample)
    makes openai-whisper loop forever on a zero-length window (openai/whisper#2005)."""
    from whisper.audio import FRAMES_PER_SECOND, HOP_LENGTH

    frames = n_samples // HOP_LENGTH  # what transcribe() calls content_frames
    out: list[float] = []
    for start, end in zip(clips[::2], clips[1::2], strict=True):
        a = min(max(0, round(start * FRAMES_PER_SECOND)), frames)
        b = min(max(0, round(end * FRAMES_PER_SECOND)), frames)
        if b > a:
            out += [a / FRAMES_PER_SECOND, b / FRAMES_PER_SECOND]
    return out or [0.0, frames / FRAMES_PER_SECOND]


# --------------------------------------------------------------------------- loading helpers


def _is_plain_name(name: str) -> bool:
    """A model name must stay inside models_dir: no separators, no leading dot."""
    return bool(name) and not name.startswith(".") and not any(c in name for c in "/\\:")


def _not_available_message(name: str, models_dir: Path, reason: str | None) -> str:
    why = f" ({reason})" if reason else ""
    return (
        f"Model '{name}' is not in {models_dir}{why}. Put {name}.pt there, or import a "
        f"faster-whisper/CTranslate2 model with: "
        f"python app.py models import <folder> --name {name}"
    )


def _load_file(name: str, path: Path) -> whisper.Whisper:
    """whisper.load_model by path on the CPU, then the alignment heads the file carries."""
    import whisper

    log.info("loading model %s from %s", name, path)
    try:
        model = whisper.load_model(str(path), device="cpu")
    except MemoryError:
        raise
    except Exception as exc:
        if "allocate" in str(exc):  # out of host memory: a resource problem, not a bad file
            raise
        raise ModelNotAvailable(
            f"Model file {path} could not be loaded ({type(exc).__name__}: {exc}). It may be "
            f"incomplete or not an openai-whisper checkpoint; replace it, or import the model "
            f"again with: python app.py models import <folder> --name {name}"
        ) from exc
    pairs = _stored_alignment_pairs(path)
    if pairs:
        set_alignment_heads_from_pairs(model, pairs)
    else:
        _set_official_alignment_heads(model, name)
    return model


def _stored_alignment_pairs(path: Path) -> list[list[int]] | None:
    """Read only the small alignment_heads_pairs entry (mmap: tensors are not read)."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy non-zip file: cannot be mapped, and was not imported by us
        return None
    return checkpoint.get("alignment_heads_pairs")


def _set_official_alignment_heads(model: whisper.Whisper, name: str) -> None:
    """Official files saved as NAME.pt have no pairs: use openai's table for that name."""
    import whisper

    dump = getattr(whisper, "_ALIGNMENT_HEADS", {}).get(name)
    if dump is None:
        return
    try:
        model.set_alignment_heads(dump)
    except RuntimeError:  # a different-sized model saved under an official name
        log.warning("model %s: official alignment heads do not fit; using the default", name)


def _download_official(name: str, models_dir: Path) -> whisper.Whisper:
    """Download an official model via a private staging folder, then move it to NAME.pt.

    Staging keeps an interrupted download from ever appearing as models_dir/NAME.pt (which
    would be loaded by path, unchecked, next time), and keeps concurrent workers apart.
    """
    import whisper

    staging = models_dir / f".download-{os.getpid()}"
    log.info("model %s is not in %s; downloading it", name, models_dir)
    try:
        model = whisper.load_model(name, device="cpu", download_root=str(staging))
        for downloaded in staging.glob("*.pt"):
            fsops.replace(downloaded, models_dir / f"{name}.pt")  # retried if held
    except _DOWNLOAD_ERRORS as exc:
        raise ModelNotAvailable(_not_available_message(
            name, models_dir, f"downloading it failed: {exc}")) from exc
    except RuntimeError as exc:
        if "SHA256" not in str(exc) and "download" not in str(exc).lower():
            raise
        raise ModelNotAvailable(_not_available_message(
            name, models_dir, f"downloading it failed: {exc}")) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model


def _place(model: whisper.Whisper, device: str) -> whisper.Whisper:
    """CPU: keep fp32. CUDA: fp16 (LayerNorm fp32) on the CPU first, then move."""
    model.eval()
    if not device.startswith("cuda"):
        return model.to(device)
    import torch

    model = cast_for_gpu(model).to(device)
    torch.cuda.empty_cache()
    return model


# --------------------------------------------------------------------------- progress hook


def _ignore(_fraction: float) -> None:
    return None


def _progress_module(callback: ProgressCallback) -> types.SimpleNamespace:
    """A stand-in for the ``tqdm`` module whisper.transcribe uses, reporting to callback."""

    class _Bar:
        def __init__(self, *args: Any, total: float | None = None, **kwargs: Any) -> None:
            self.total, self.n, self.last, self.stalled = total or 0, 0.0, 0.0, 0

        def __enter__(self) -> _Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def update(self, n: float = 1) -> None:
            # whisper's loop calls update once per window with how far it moved; never moving
            # again means it is stuck on one window (a known openai-whisper failure)
            self.stalled = self.stalled + 1 if n <= 0 else 0
            if self.stalled >= STALL_WINDOWS:
                raise EngineStuck(STUCK_MESSAGE)
            self.n += n
            self._report(self.n)

        def within(self, seconds: float) -> None:
            """Inside the current window: the decoder has just written a timestamp token."""
            self._report(self.n + min(seconds, 30.0) * 100)  # frames: 100 per second

        def _report(self, frames: float) -> None:
            if self.total > 0:
                value = min(1.0, max(self.last, frames / self.total))
                if value > self.last or frames >= self.total:
                    self.last = value
                    callback(value)

        def close(self) -> None:
            return None

    _Bar.current = None  # the bar of the transcription running now (one per process)

    def tqdm(*args: Any, **kwargs: Any) -> _Bar:
        bar = _Bar(*args, **kwargs)
        _Bar.current = bar
        return bar

    return types.SimpleNamespace(tqdm=tqdm, bar=_Bar)


class _TimestampProgress:
    """A logit filter that only looks: each timestamp token the decoder writes says how far into
    its 30-s window it got, so progress moves within a window (a short file is one window)."""

    def __init__(self, bar_class: type, timestamp_begin: int) -> None:
        self.bar_class, self.timestamp_begin = bar_class, timestamp_begin

    def apply(self, logits: Any, tokens: Any) -> None:
        last = int(tokens[0, -1])
        bar = self.bar_class.current
        if bar is not None and last >= self.timestamp_begin:
            bar.within((last - self.timestamp_begin) * 0.02)  # whisper's timestamp step


@contextlib.contextmanager
def _progress_hook(callback: ProgressCallback | None) -> Iterator[None]:
    """Temporarily swap whisper.transcribe's tqdm and watch the decoder's timestamp tokens
    (module-global: one transcription at a time, which is what a worker does).

    ``whisper.transcribe`` as an attribute is the function, so the module comes from importlib.
    """
    if callback is None:
        yield
        return
    module = importlib.import_module("whisper.transcribe")
    decoding = importlib.import_module("whisper.decoding")
    fake = _progress_module(callback)
    original, original_init = module.tqdm, decoding.DecodingTask.__init__

    def init(task: Any, *args: Any, **kwargs: Any) -> None:
        original_init(task, *args, **kwargs)
        task.logit_filters.append(_TimestampProgress(fake.bar, task.tokenizer.timestamp_begin))

    module.tqdm = fake
    decoding.DecodingTask.__init__ = init
    try:
        yield
    finally:
        module.tqdm = original
        decoding.DecodingTask.__init__ = original_init
