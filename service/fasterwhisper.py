"""The faster-whisper engine (CTranslate2): a model folder used as it is, same inputs and output
shape as openai-whisper (engines.Engine).

Why each choice:

* Models are CTranslate2 folders ``models_dir/NAME/`` (``model.bin``, ``config.json``,
  ``tokenizer.json``, ``vocabulary.*``), loaded in place, no conversion. A ``model.bin`` split
  into ``model.bin.part1``, ``.part2`` … (packages that cap file sizes do this) is streamed to
  CTranslate2 through one chained reader (its ``files=`` argument): the parts are read once,
  never joined into a copy on disk.
* An official name that is missing is downloaded into ``models_dir/NAME/`` (through a staging
  folder) only where ``models.allow_download`` allows; otherwise the message says which folder
  to put there. Nothing else ever reaches the network: a folder without ``tokenizer.json``
  would make faster-whisper fetch one from the hub, so it is refused with that reason.
* ``compute_type: auto``: float16 on a GPU (int8_float16 with ``prefer_memory``), int8 on the
  CPU; a type the device cannot run falls back to auto's choice with a warning.
* Speech regions come from our silero VAD (the same regions as openai-whisper gets). One window
  after another, they are ``clip_timestamps`` exactly as openai-whisper reads them; batched
  (``BatchedInferencePipeline``, ``batch_size`` > 1) they are grouped into spans of at most
  30 s, each decoded independently with its times already in the file.
* The prompt is carried to every window: as ``hotwords`` one window after another (faster-whisper
  puts them after <|startofprev|> in every window, the same tokens openai-whisper's
  ``carry_initial_prompt`` sends), as ``initial_prompt`` batched (used for every batch item).
* Progress is the last segment's end time over the duration; an exception raised by the
  callback stops the generator (cancelling). The random seed is fixed once per file
  (`seed`), like openai-whisper's.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import catalog
from .options import Decoding

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
MAX_SPAN_SECONDS = 30.0  # one Whisper window: a batched item longer than this is cut
DEFAULT_BEAM_SIZE = 5  # when beam_size is null: see decoding()
MODEL_FILE = "model.bin"
NEEDED = ("config.json", "tokenizer.json")
# faster-whisper's official names (faster_whisper.utils._MODELS); read lazily from there.
_CPU_AUTO = "int8"

ProgressCallback = Callable[[float], None]

__all__ = ["FasterWhisper", "add_cuda_dll_directories", "batched", "cuda_dll_folders",
           "model_folder", "resolve_compute_type", "spans"]


# --------------------------------------------------------------------------- pure helpers


def resolve_compute_type(setting: str, device: str, prefer_memory: bool,
                         supported: Iterable[str] | None) -> str:
    """What `compute_type` means on this device. `supported` = CTranslate2's list for the
    device (None in the parent, which must not import CTranslate2: the setting is trusted)."""
    on_gpu = device.startswith("cuda")
    auto = ("int8_float16" if prefer_memory else "float16") if on_gpu else _CPU_AUTO
    if setting == "auto":
        choice = auto
    else:
        choice = setting
    if supported is not None:
        kinds = set(supported)
        if choice not in kinds:
            fallback = auto if auto in kinds else ("int8" if "int8" in kinds else "float32")
            log.warning("compute_type %s is not supported on %s; using %s", choice, device,
                        fallback)
            choice = fallback
    return choice


def batched(opts: Decoding) -> bool:
    """Batched inference needs independent windows: our speech regions (VAD on), and no
    option that only the window-after-window loop has (hallucination_silence_threshold)."""
    return opts.batch_size > 1 and opts.vad and opts.hallucination_silence_threshold is None


def spans(speech: Sequence[tuple[float, float]],
          limit: float = MAX_SPAN_SECONDS) -> list[tuple[float, float]]:
    """Speech regions grouped into spans of at most `limit` seconds (one window each): a
    region longer than that is cut into equal pieces; neighbours share a span while it fits.
    The silence between grouped regions is decoded too, and postprocess drops anything said
    outside speech, so no text is invented there."""
    pieces: list[tuple[float, float]] = []
    for start, end in speech:
        if end <= start:
            continue
        n = max(1, int(np.ceil((end - start) / limit - 1e-9)))
        step = (end - start) / n
        pieces += [(start + i * step, min(end, start + (i + 1) * step)) for i in range(n)]
    out: list[tuple[float, float]] = []
    for start, end in pieces:
        if out and end - out[-1][0] <= limit:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def _parts(folder: Path) -> list[Path]:
    parts = [p for p in folder.glob(MODEL_FILE + ".part*") if p.suffix[5:].isdigit()]
    return sorted(parts, key=lambda p: int(p.suffix[5:]))


def model_folder(name: str, models_dir: Path) -> Path | None:
    """models_dir/NAME/ if it holds a CTranslate2 model (model.bin or its parts), else None."""
    from .catalog import is_ct2_folder
    from .engine import _is_plain_name

    if not _is_plain_name(name):
        return None
    folder = Path(models_dir) / name
    return folder if is_ct2_folder(folder) else None


def cuda_dll_folders(roots: Iterable[Path]) -> list[Path]:
    """The `bin` folders of the nvidia-cublas-cu12 / nvidia-cudnn-cu12 wheels (and their
    versioned siblings) under site-packages `roots`: Python ≥ 3.8 on Windows ignores PATH for
    DLLs, so CTranslate2 cannot find cublas64_12.dll / cudnn_ops64_9.dll there by itself."""
    found = []
    for root in roots:
        nvidia = Path(root) / "nvidia"
        if not nvidia.is_dir():
            continue
        for lib in sorted(nvidia.iterdir()):
            if lib.name.startswith(("cublas", "cudnn", "cuda_runtime", "cuda_nvrtc")):
                found += [b for b in (lib / "bin", lib / "lib") if b.is_dir()]
    return found


def add_cuda_dll_directories(roots: Iterable[Path] | None = None,
                             add: Callable[[str], object] | None = None) -> list[Path]:
    """Add the CUDA library folders of installed nvidia wheels to the DLL search path (Windows;
    a no-op elsewhere unless `add` is given). Returns the folders added."""
    if add is None:
        if sys.platform != "win32":
            return []
        add = os.add_dll_directory
    if roots is None:
        import site

        roots = [Path(p) for p in [*site.getsitepackages(), site.getusersitepackages()]]
    folders = cuda_dll_folders(roots)
    for folder in folders:
        add(str(folder))
    return folders


def is_missing_cuda_library(err: BaseException) -> bool:
    """CTranslate2 could not load cuBLAS/cuDNN (faster-whisper #85 #1080 #1230)."""
    text = str(err).lower()
    return any(lib in text for lib in ("cublas", "cudnn")) and any(
        word in text for word in (".dll", ".so", "not found", "cannot be loaded",
                                  "could not locate", "cannot open", "unable to load"))


class _Chained(io.RawIOBase):
    """model.bin.part1 + part2 + … read as one stream (no joined copy on disk)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        super().__init__()
        self._paths, self._i, self._fh = list(paths), 0, None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while self._i < len(self._paths):
            if self._fh is None:
                self._fh = open(self._paths[self._i], "rb")  # noqa: SIM115 - closed below
            n = self._fh.readinto(buffer)
            if n:
                return n
            self._fh.close()
            self._fh, self._i = None, self._i + 1
        return 0

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        super().close()


# --------------------------------------------------------------------------- the engine


class FasterWhisper:
    """faster-whisper 1.2 (CTranslate2 4) as an engines.Engine."""

    name = catalog.FASTER

    def load(self, name: str, models_dir: Path, device: str, allow_download: bool,
             opts: Decoding, threads: int) -> Any:
        from . import engine

        add_cuda_dll_directories()  # before CTranslate2 loads CUDA (Windows only)
        import ctranslate2
        from faster_whisper import WhisperModel

        models_dir = Path(models_dir)
        if not engine._is_plain_name(name):
            raise engine.ModelNotAvailable(
                f"'{name}' is not a model name: use a plain name such as 'small', whose "
                f"faster-whisper folder lives in {models_dir}.")
        folder = model_folder(name, models_dir) or self._download(name, models_dir,
                                                                   allow_download)
        missing = [f for f in NEEDED if not (folder / f).is_file()]
        if missing:
            raise engine.ModelNotAvailable(
                f"The faster-whisper model folder {folder} lacks {', '.join(missing)}; copy the "
                f"whole CTranslate2 folder (model.bin, config.json, tokenizer.json, "
                f"vocabulary) there.")
        ct2_device = "cuda" if device.startswith("cuda") else "cpu"
        compute = resolve_compute_type(opts.compute_type, ct2_device, opts.prefer_memory,
                                       ctranslate2.get_supported_compute_types(ct2_device))
        files = self._files(folder)
        log.info("loading faster-whisper model %s from %s (%s, %s%s)", name, folder,
                 ct2_device, compute, ", split model.bin" if files else "")
        try:
            model = WhisperModel(str(folder), device=ct2_device, compute_type=compute,
                                 cpu_threads=max(0, threads), files=files,
                                 local_files_only=True)
        except RuntimeError as exc:
            text = str(exc)
            if is_missing_cuda_library(exc) or "out of memory" in text.lower() \
                    or "CUDA" in text:
                raise
            raise engine.ModelNotAvailable(
                f"The faster-whisper model in {folder} could not be loaded ({text}). It may be "
                f"incomplete or not a CTranslate2 Whisper model; copy the folder again."
            ) from exc
        finally:
            for f in (files or {}).values():
                if hasattr(f, "close"):
                    f.close()
        model.dropscribe_compute_type = compute
        return model

    @staticmethod
    def _files(folder: Path) -> dict[str, Any] | None:
        """None when model.bin is whole (CTranslate2 maps it itself); else every file of the
        folder for `files=`, model.bin as the chained parts."""
        if (folder / MODEL_FILE).is_file():
            return None
        files: dict[str, Any] = {}
        for item in folder.iterdir():
            if item.is_file() and not item.name.startswith(MODEL_FILE):
                files[item.name] = item.read_bytes()
        files[MODEL_FILE] = io.BufferedReader(_Chained(_parts(folder)), 1 << 20)
        return files

    @staticmethod
    def _download(name: str, models_dir: Path, allow_download: bool) -> Path:
        from faster_whisper.utils import available_models, download_model

        from . import engine

        official = name in available_models()
        if not (official and allow_download):
            why = " (downloading is switched off)" if official else ""
            raise engine.ModelNotAvailable(
                f"Model '{name}' is not in {models_dir}{why}. For transcribe.engine "
                f"faster-whisper, put the CTranslate2 folder there as {models_dir / name} "
                f"(model.bin or model.bin.part1, part2 …, config.json, tokenizer.json, "
                f"vocabulary), or use openai-whisper with {name}.pt.")
        dest = models_dir / name
        staging = models_dir / f".download-{os.getpid()}-{name}"
        log.info("faster-whisper model %s is not in %s; downloading it", name, models_dir)
        try:
            download_model(name, output_dir=str(staging))
            os.replace(staging, dest)
        except Exception as exc:  # noqa: BLE001 - the hub's errors are many; all mean "no"
            raise engine.ModelNotAvailable(
                f"Model '{name}' is not in {models_dir} (downloading it failed: {exc}). Put "
                f"the CTranslate2 folder there as {dest}.") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return dest

    def compute_type(self, model: Any) -> str:
        return model.dropscribe_compute_type

    def multilingual(self, model: Any) -> bool:
        return bool(model.model.is_multilingual)

    def seed(self) -> None:
        import ctranslate2

        ctranslate2.set_random_seed(0)  # temperature fallback samples: same file, same text

    def detect_language(self, model: Any, samples: np.ndarray,
                        speech: Sequence[tuple[float, float]] | None,
                        allowed: Sequence[str] | None) -> tuple[str, float]:
        if not model.model.is_multilingual:
            return "en", 1.0
        # padded with silence to one window, as openai-whisper does: faster-whisper pads the
        # features with zeros instead, which is not silence in log-mel space and made base
        # hear Latin in a 3-s English sentence (p 0.32 vs 0.51 for English once padded)
        window = 30 * SAMPLE_RATE
        clip = _first_speech(samples, speech, window)
        clip = np.pad(clip, (0, window - len(clip)))
        _, _, probs = model.detect_language(audio=clip, language_detection_segments=1)
        candidates = [(k, p) for k, p in probs if not allowed or k in allowed] or probs
        best, p = max(candidates, key=lambda kv: kv[1])
        return best, float(p)

    def transcribe(self, model: Any, samples: np.ndarray, *, language: str | None, task: str,
                   prompt: str | None, speech: Sequence[tuple[float, float]] | None,
                   opts: Decoding, progress: ProgressCallback | None) -> dict[str, Any]:
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        duration = len(samples) / SAMPLE_RATE
        common = dict(language=language, task=task, **decoding(opts), vad_filter=False)
        if speech and batched(opts):
            from faster_whisper import BatchedInferencePipeline

            # inside the audio: a padded region can end past the last sample, and faster-whisper
            # asserts that the speech it was given is not longer than the file
            inside = [(max(0.0, s), min(e, duration)) for s, e in speech]
            clips = [{"start": s, "end": e} for s, e in spans(inside)]
            segments, _ = BatchedInferencePipeline(model).transcribe(
                samples, clip_timestamps=clips, batch_size=opts.batch_size,
                initial_prompt=prompt, without_timestamps=False, **common)
        else:
            from .engine import clips_within

            clips = "0" if not speech else clips_within(
                [t for pair in speech for t in pair], len(samples))
            segments, _ = model.transcribe(
                samples, clip_timestamps=clips, hotwords=prompt,
                condition_on_previous_text=opts.condition_on_previous_text,
                hallucination_silence_threshold=opts.hallucination_silence_threshold,
                **common)
        out, last = [], 0.0
        for seg in segments:  # a generator: decoding happens while it is read
            out.append(_segment(len(out), seg))
            if duration > 0 and progress is not None:
                last = max(last, min(1.0, seg.end / duration))
                progress(last)
        if progress is not None:
            progress(1.0)
        return {"text": "".join(s["text"] for s in out), "segments": out, "language": language}


def decoding(opts: Decoding) -> dict[str, Any]:
    """faster-whisper's decoding keywords for `opts`. beam_size null is this engine's default,
    beam search with 5 (faster-whisper's own): here it costs about 1.2× greedy on a CPU, and it
    was better on every file of bench/quality.py's corpus (Mandarin CER 0.70 → 0.57, English
    WER 0.15 → 0.08 and 0.33 → 0.19, base/tiny.en, int8) while greedy once left a repetition
    loop; openai-whisper keeps greedy, where beam search costs 4-5×. 1 = greedy here too."""
    return dict(beam_size=opts.beam_size or DEFAULT_BEAM_SIZE, best_of=opts.best_of or 5,
                temperature=opts.whisper_options()["temperature"],
                word_timestamps=opts.word_timestamps, no_speech_threshold=opts.no_speech_threshold,
                compression_ratio_threshold=opts.compression_ratio_threshold)


def _first_speech(samples: np.ndarray, speech: Sequence[tuple[float, float]] | None,
                  limit: int) -> np.ndarray:
    """The first `limit` samples of speech, regions joined (the whole start without VAD)."""
    if not speech:
        return np.ascontiguousarray(samples[:limit], dtype=np.float32)
    pieces, total = [], 0
    for start, end in speech:
        piece = samples[int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)]
        pieces.append(piece)
        total += len(piece)
        if total >= limit:
            break
    clip = np.concatenate(pieces) if pieces else samples
    return np.ascontiguousarray(clip[:limit], dtype=np.float32)


def _segment(index: int, seg: Any) -> dict[str, Any]:
    """A faster-whisper Segment as openai-whisper's segment dict (same keys, same types)."""
    item = {
        "id": index, "seek": int(seg.seek), "start": float(seg.start), "end": float(seg.end),
        "text": seg.text, "tokens": list(seg.tokens), "temperature": float(seg.temperature or 0.0),
        "avg_logprob": float(seg.avg_logprob), "compression_ratio": float(seg.compression_ratio),
        "no_speech_prob": float(seg.no_speech_prob),
    }
    if seg.words:
        item["words"] = [{"word": w.word, "start": float(w.start), "end": float(w.end),
                          "probability": float(w.probability)} for w in seg.words]
    return item
