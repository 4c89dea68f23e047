"""What does a Whisper model really cost on a GPU, stock loading vs our fp16 path? (prints figures)

    python bench/gpu_probe.py                 # on a GPU machine: all six models (< 8 min)
    python bench/gpu_probe.py --device cpu    # the same code paths on the CPU (tiny, base)
    python bench/gpu_probe.py --weights-only  # weight sizes from the dimensions, no device

Why: the VRAM pool admits tasks on estimates (openai-whisper's README table × confidence_factor,
service/vram.py) that nobody has measured against our own loading path (service/engine.py: load
on the CPU, cast all but LayerNorm to fp16, move, empty_cache). This probe measures, per model:

* stock ``whisper.load_model(path, device="cuda")`` and ``service.engine.load_model(..., "cuda")``
  each in a fresh spawned child (clean CUDA state): CUDA context, load peak, steady memory after
  ``empty_cache``, transcription peak, wall times;
* whether the card's used memory (NVML) returns to the baseline after the child exits;
* throughput of 1, 2, 4 concurrent tasks on one card (same model, same clip, same weights);
* the second engine, faster-whisper, on the same weights (bench/probe_faster.py): each model's
  CTranslate2 folder (bench/ct2_models.py) per compute type — load, memory after loading, peak
  as the worker measures it (NVML per process) — and k tasks at once against one task batched k.
  ``--engines`` picks the engines (default both).

Weights are random (seeded) with the real dimensions, saved like the official checkpoints
(``{"dims", "model_state_dict"}`` in fp16) as ``<name>.pt``, so nothing is downloaded; they decode
garbage, so decoding is bounded (greedy, temperature 0, no timestamps, ``--max-tokens`` per 30-s
window) and equal in every process. The parent process never initialises CUDA (it uses NVML only).

On the CPU the figures are RSS above the child's baseline (after imports) instead of VRAM, and
the engine path keeps fp32 (it casts only for CUDA). The last line is machine-readable:

    RESULT device=<cuda|cpu> models=<n> fp16_vs_stock_load_peak=<median ratio>
           back_to_baseline=<all|some|n/a> faster_models=<n>
           faster_<compute type>_vs_openai_fp16_peak=<median ratio|n/a>      (one line)

It is a benchmark, not a test: it asserts no figures. tests/test_gpu_probe.py runs it on the CPU.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import logging
import multiprocessing
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whisper.model import ModelDimensions

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Only modules that need nothing beyond torch, whisper and NVML: the GPU machines' image lacks
# most of the service's dependencies (pydantic, PyAV, SQLAlchemy).
from bench import ct2_models, probe_faster  # noqa: E402
from bench.probe_faster import first_report as _report  # noqa: E402
from bench.probe_faster import mb as _mb  # noqa: E402
from service import catalog, engine  # noqa: E402  (importing these touches neither torch nor CUDA)
from service.gpu import NvmlBackend  # noqa: E402
from service.worker import exit_with_parent  # noqa: E402  (stdlib only at import)

if TYPE_CHECKING:
    import torch

log = logging.getLogger("bench.gpu_probe")

MiB = 1024 * 1024
SAMPLE_RATE = 16_000
SEED = 20240930
BASELINE_TOLERANCE_MB = 64  # "back to baseline" = NVML used within this of the reading before
BASELINE_TIMEOUT_S = 30.0
CHILD_TIMEOUT_S = 300.0  # one child; a stock large-v3 load + transcription takes well under this
DEFAULT_BUDGET_S = 400.0  # no new step starts after this: the whole run must end within 8 min
ALL_MODELS = ("tiny", "base", "small", "medium", "large-v3", "turbo")
CPU_MODELS = ("tiny", "base")
CHECKPOINT_FORMAT = 1  # bump when the generated weights change: cached files are rebuilt
CONFIDENCE_FACTOR = 1.2  # GpuSettings.confidence_factor's default (a test keeps them equal)


def default_estimate(name: str) -> int:
    """service.vram.default_estimate with the default factor (that module needs pydantic)."""
    return int(catalog.default_vram_mb(name) * CONFIDENCE_FACTOR)


def _dims(state: int, heads: int, layers: int, *, n_mels: int = 80, n_vocab: int = 51865,
          text_layers: int | None = None) -> ModelDimensions:
    """One family's dimensions: encoder and decoder share width and heads."""
    return ModelDimensions(
        n_mels=n_mels, n_audio_ctx=1500, n_audio_state=state, n_audio_head=heads,
        n_audio_layer=layers, n_vocab=n_vocab, n_text_ctx=448, n_text_state=state,
        n_text_head=heads, n_text_layer=layers if text_layers is None else text_layers,
    )


# The official checkpoints' dimensions (openai-whisper's model card; English-only: n_vocab 51864,
# v1/v2: 51865 and 80 mels, v3: 51866 and 128 mels; turbo: large-v3's encoder, 4 text layers).
MODEL_DIMS: dict[str, ModelDimensions] = {
    "tiny.en": _dims(384, 6, 4, n_vocab=51864),
    "tiny": _dims(384, 6, 4),
    "base.en": _dims(512, 8, 6, n_vocab=51864),
    "base": _dims(512, 8, 6),
    "small.en": _dims(768, 12, 12, n_vocab=51864),
    "small": _dims(768, 12, 12),
    "medium.en": _dims(1024, 16, 24, n_vocab=51864),
    "medium": _dims(1024, 16, 24),
    "large-v1": _dims(1280, 20, 32),
    "large-v2": _dims(1280, 20, 32),
    "large-v3": _dims(1280, 20, 32, n_mels=128, n_vocab=51866),
    "large": _dims(1280, 20, 32, n_mels=128, n_vocab=51866),  # openai-whisper: large = v3
    "large-v3-turbo": _dims(1280, 20, 32, n_mels=128, n_vocab=51866, text_layers=4),
    "turbo": _dims(1280, 20, 32, n_mels=128, n_vocab=51866, text_layers=4),
}


# --------------------------------------------------------------------------- weights (no device)


@dataclass(frozen=True)
class WeightInfo:
    name: str
    params: int  # every tensor of the state dict (the encoder's sinusoid buffer included)
    fp16_bytes: int  # as the engine holds them on CUDA: LayerNorm and buffers stay fp32
    fp32_bytes: int  # as stock load_model holds them: everything fp32

    @property
    def params_m(self) -> float:
        return self.params / 1e6


def _meta_modules(dims: ModelDimensions) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Encoder and decoder on the meta device: shapes without memory (the Whisper wrapper
    itself cannot be built there: its alignment-heads buffer needs a sparse conversion)."""
    import torch
    from whisper.model import AudioEncoder, TextDecoder

    with torch.device("meta"):
        encoder = AudioEncoder(dims.n_mels, dims.n_audio_ctx, dims.n_audio_state,
                               dims.n_audio_head, dims.n_audio_layer)
        decoder = TextDecoder(dims.n_vocab, dims.n_text_ctx, dims.n_text_state,
                              dims.n_text_head, dims.n_text_layer)
    return encoder, decoder


def state_dict_shapes(dims: ModelDimensions) -> dict[str, tuple[int, ...]]:
    """Key → shape of the checkpoint's model_state_dict, as whisper.Whisper names them."""
    encoder, decoder = _meta_modules(dims)
    shapes = {f"encoder.{k}": tuple(v.shape) for k, v in encoder.state_dict().items()}
    shapes.update({f"decoder.{k}": tuple(v.shape) for k, v in decoder.state_dict().items()})
    return shapes


def weight_info(name: str) -> WeightInfo:
    """Parameter count and resident weight bytes, fp32 and after engine.cast_for_gpu (meta)."""
    encoder, decoder = _meta_modules(MODEL_DIMS[name])
    params = sum(v.numel() for m in (encoder, decoder) for v in m.state_dict().values())

    def nbytes(modules: Iterable[torch.nn.Module]) -> int:
        return sum(t.numel() * t.element_size() for m in modules
                   for t in (*m.parameters(), *m.buffers()))

    fp32 = nbytes((encoder, decoder))
    for module in (encoder, decoder):
        engine.cast_for_gpu(module)  # the engine's own cast, run on shapes only
    return WeightInfo(name, params, nbytes((encoder, decoder)), fp32)


# --------------------------------------------------------------------------- checkpoints


def _seed_for(name: str, seed: int) -> int:
    return (zlib.crc32(name.encode()) ^ seed) & 0x7FFF_FFFF


def build_checkpoint(name: str, path: Path, seed: int = SEED) -> Path:
    """Write random fp16 weights with NAME's real dimensions the way official files are stored.

    Seeded per name, so every run and process gets the same weights. LayerNorms are ones/zeros,
    the encoder's positions are the usual sinusoids, other weights N(0, 0.02), biases zero: the
    activations stay finite in fp16, which is all random weights need to do here.
    """
    import torch
    from whisper.model import sinusoids

    dims = MODEL_DIMS[name]
    encoder, decoder = _meta_modules(dims)
    layernorm_keys = {
        f"{prefix}.{module_name}.{param_name}"
        for prefix, root in (("encoder", encoder), ("decoder", decoder))
        for module_name, module in root.named_modules()
        if isinstance(module, torch.nn.LayerNorm)
        for param_name, _ in module.named_parameters(recurse=False)
    }
    gen = torch.Generator().manual_seed(_seed_for(name, seed))
    state: dict[str, torch.Tensor] = {}
    for key, shape in state_dict_shapes(dims).items():
        if key == "encoder.positional_embedding":
            tensor = sinusoids(*shape)
        elif key in layernorm_keys:
            tensor = torch.ones(shape) if key.endswith("weight") else torch.zeros(shape)
        elif len(shape) == 1:
            tensor = torch.zeros(shape)
        else:
            tensor = torch.empty(shape).normal_(0.0, 0.02, generator=gen)
        state[key] = tensor.to(torch.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    torch.save({"dims": asdict(dims), "model_state_dict": state}, tmp)
    os.replace(tmp, path)
    return path


def _checkpoint_key(name: str, seed: int) -> str:
    return json.dumps({"format": CHECKPOINT_FORMAT, "seed": seed,
                       "dims": asdict(MODEL_DIMS[name])}, sort_keys=True)


def _build_checkpoints_child(conn: Connection, names: list[str], models_dir: str,
                             seed: int, ct2: list[str] | None = None) -> None:
    """Spawned child: builds the files, so the parent never holds gigabytes of weights.
    `ct2`: models whose CTranslate2 folder (<name>/, from the same weights) is made too."""
    exit_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s build %(message)s")
    try:
        for name in names:
            started = time.perf_counter()
            path = build_checkpoint(name, Path(models_dir) / f"{name}.pt", seed)
            path.with_suffix(".key").write_text(_checkpoint_key(name, seed), encoding="utf-8")
            log.info("built %s (%.0f MiB) in %.1f s", path.name, path.stat().st_size / MiB,
                     time.perf_counter() - started)
        for name in ct2 or []:
            started = time.perf_counter()
            folder = ct2_models.from_checkpoint(Path(models_dir) / f"{name}.pt",
                                                Path(models_dir) / name)
            (folder / "probe.key").write_text(_checkpoint_key(name, seed), encoding="utf-8")
            log.info("built the CTranslate2 folder %s in %.1f s", folder.name,
                     time.perf_counter() - started)
        conn.send(("ok", None))
    except BaseException as err:  # noqa: BLE001 - reported to the parent
        conn.send(("error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))
    finally:
        conn.close()


def _built(key_file: Path, name: str, seed: int) -> bool:
    return key_file.is_file() and key_file.read_text(encoding="utf-8") == _checkpoint_key(
        name, seed)


def ensure_checkpoints(ctx: multiprocessing.context.BaseContext, names: Sequence[str],
                       models_dir: Path, seed: int, ct2: Sequence[str] = ()) -> None:
    """Build (in one child) every <name>.pt that is missing or was built differently, and
    the CTranslate2 folder <name>/ of each model in `ct2` made from it."""
    missing = [n for n in dict.fromkeys(names) if not (
        (models_dir / f"{n}.pt").is_file() and _built(models_dir / f"{n}.key", n, seed))]
    folders = [n for n in dict.fromkeys(ct2) if n in missing or not (
        (models_dir / n / "model.bin").is_file() and _built(models_dir / n / "probe.key", n, seed))]
    if not missing and not folders:
        log.info("checkpoints cached in %s", models_dir)
        return
    log.info("building random-weight checkpoints %s and CTranslate2 folders %s in %s",
             ",".join(missing) or "-", ",".join(folders) or "-", models_dir)
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_build_checkpoints_child,
                       args=(send, missing, str(models_dir), seed, folders))
    proc.start()
    send.close()
    status = _receive(recv, proc, CHILD_TIMEOUT_S * 2)
    proc.join(10)
    if status[0] != "ok":
        raise SystemExit(f"building checkpoints failed: {status[1]}")


# --------------------------------------------------------------------------- host memory


def _proc_status_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_mb() -> float:
    """Current resident memory of this process."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / MiB
    except ImportError:
        kib = _proc_status_kib("VmRSS")
        return (kib or 0) / 1024


def peak_rss_mb() -> float:
    """Peak resident memory of this process.

    VmHWM, not getrusage's ru_maxrss where Linux has it: a spawned child's ru_maxrss starts at
    the parent's peak (the kernel carries it across exec), so it would report the parent.
    """
    kib = _proc_status_kib("VmHWM")
    if kib is not None:
        return kib / 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MiB if sys.platform == "darwin" else peak / 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0), so the next peak is the transcription's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- the measuring child


@dataclass(frozen=True)
class ChildSpec:
    role: str  # "stock" | "fp16" (engine path) | "throughput" (engine path)
    model: str
    models_dir: str
    device: str  # "cuda" | "cpu"
    gpu: int
    clip: str  # .npy of 16 kHz mono float32
    max_tokens: int
    threads: int = 0  # torch threads; 0 = torch's default
    parent_baseline_mb: int | None = None  # NVML used before the child started
    compute_type: str = ""  # faster-whisper roles: CTranslate2's compute type
    batch: int = 0  # faster-whisper: > 1 = that many copies of the clip, batched


def _outside_allocator_mb(torch_mod: Any, spec: ChildSpec) -> tuple[float | None, str]:
    """Memory this process holds on the card beyond torch's allocator: the CUDA context,
    kernels, cuBLAS handles. NVML's figure for our PID, else the card's used minus the
    parent's baseline (PIDs differ inside containers; WDDM reports none)."""
    torch_mod.cuda.synchronize()
    reserved = torch_mod.cuda.memory_reserved() / MiB
    try:
        backend = NvmlBackend([spec.gpu])
        own = backend.process_used_mb(spec.gpu, os.getpid())
        if own:
            return own - reserved, "nvml-process"
        if spec.parent_baseline_mb is not None:
            used = backend.devices()[0].used_mb
            return used - spec.parent_baseline_mb - reserved, "nvml-device"
    except Exception as err:  # noqa: BLE001 - NVML missing or refusing: say so in the table
        log.warning("NVML unavailable in the child: %s", err)
    return None, "n/a"


def measure(spec: ChildSpec, barrier: Any = None) -> dict[str, Any]:
    """Load SPEC.model the way SPEC.role says, then transcribe the clip; return the figures.

    Runs inside a fresh spawned process. With a barrier (throughput), all tasks start
    transcribing together once every one has loaded.
    """
    if spec.device == "cuda":
        os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # NVML's order, not fastest-first
        os.environ["CUDA_VISIBLE_DEVICES"] = str(spec.gpu)  # before CUDA is first touched
    if spec.role.startswith("faster"):
        return probe_faster.measure(spec, MODEL_DIMS[spec.model].n_vocab, rss_mb, peak_rss_mb,
                                    reset_peak_rss, barrier)
    import numpy as np
    import torch
    import whisper

    if spec.threads > 0:
        torch.set_num_threads(spec.threads)
    cuda = spec.device == "cuda"
    clip = np.load(spec.clip)
    rec: dict[str, Any] = {"role": spec.role, "model": spec.model, "pid": os.getpid(),
                           "threads": torch.get_num_threads()}
    baseline = rss_mb()
    rec["baseline_rss_mb"] = baseline
    if cuda:
        torch.zeros(1, device="cuda")
        rec["context_init_mb"], rec["context_method"] = _outside_allocator_mb(torch, spec)
        torch.cuda.reset_peak_memory_stats()

    started = time.perf_counter()
    if spec.role == "stock":
        path = Path(spec.models_dir) / f"{spec.model}.pt"
        model = whisper.load_model(str(path), device=spec.device)
    else:
        model = engine.load_model(spec.model, Path(spec.models_dir), spec.device,
                                  allow_download=False)
    if cuda:
        torch.cuda.synchronize()
    rec["load_s"] = time.perf_counter() - started
    rec["dtype"] = str(model.decoder.token_embedding.weight.dtype).replace("torch.", "")
    rec["weights_mb"] = sum(t.numel() * t.element_size()
                            for t in (*model.parameters(), *model.buffers())) / MiB
    if cuda:
        rec["load_peak_mb"] = torch.cuda.max_memory_reserved() / MiB
        rec["after_load_mb"] = torch.cuda.memory_reserved() / MiB
        torch.cuda.empty_cache()
        rec["steady_mb"] = torch.cuda.memory_reserved() / MiB
        rec["allocated_mb"] = torch.cuda.memory_allocated() / MiB
        torch.cuda.reset_peak_memory_stats()
    else:
        gc.collect()
        rec["load_peak_mb"] = peak_rss_mb() - baseline
        rec["steady_mb"] = rss_mb() - baseline
        rec["peak_reset"] = reset_peak_rss()

    # Random weights emit timestamp tokens even with <|notimestamps|>; whisper.transcribe would
    # then seek to them, decoding a random number of windows (or looping at a zero timestamp).
    tokenizer = whisper.tokenizer.get_tokenizer(
        model.is_multilingual, num_languages=model.num_languages, language="en",
        task="transcribe")
    suppress = [-1, *range(tokenizer.timestamp_begin, model.dims.n_vocab)]
    if barrier is not None:
        barrier.wait(CHILD_TIMEOUT_S)
    rec["transcribe_start"] = time.monotonic()  # system-wide clock: comparable across children
    result = engine.transcribe(
        model, clip, language="en", task="transcribe", initial_prompt=None, fp16=cuda,
        progress=lambda fraction: None, temperature=0.0, without_timestamps=True,
        sample_len=spec.max_tokens, condition_on_previous_text=False, suppress_tokens=suppress,
    )
    if cuda:
        torch.cuda.synchronize()
    rec["transcribe_end"] = time.monotonic()
    rec["transcribe_s"] = rec["transcribe_end"] - rec["transcribe_start"]
    if cuda:
        rec["transcribe_peak_mb"] = torch.cuda.max_memory_reserved() / MiB
        rec["context_end_mb"], _ = _outside_allocator_mb(torch, spec)
    else:
        rec["transcribe_peak_mb"] = peak_rss_mb() - baseline
    rec["segments"] = len(result["segments"])
    rec["tokens"] = sum(len(seg["tokens"]) for seg in result["segments"])
    rec["text_sha"] = hashlib.sha256(result["text"].encode()).hexdigest()[:12]
    return rec


def _child_main(conn: Connection, spec: ChildSpec, barrier: Any = None) -> None:
    """Entry point of a spawned measuring child: one report, then exit at once (like the worker)."""
    exit_with_parent()
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s {spec.role} {spec.model} %(process)d %(message)s")
    try:
        conn.send(("ok", measure(spec, barrier)))
    except BaseException as err:  # noqa: BLE001 - every failure becomes a report
        if barrier is not None:
            barrier.abort()  # the others must not wait for us
        log.error("failed:\n%s", traceback.format_exc())
        conn.send(("error", f"{type(err).__name__}: {err}"[:300]))
    finally:
        conn.close()
    logging.shutdown()
    os._exit(0)


# --------------------------------------------------------------------------- the parent


class CardWatch:
    """NVML readings of one card from the parent (which never initialises CUDA)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.backend = NvmlBackend([index])
        if not self.backend.devices():
            raise RuntimeError(f"NVML sees no GPU with index {index}")
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def used_mb(self) -> int:
        return self.backend.devices()[0].used_mb

    def start_peak(self) -> None:
        """Poll used memory every 50 ms in a thread until stop_peak()."""
        self._peak = self.used_mb()
        self._stop.clear()

        def poll() -> None:
            while not self._stop.wait(0.05):
                self._peak = max(self._peak, self.used_mb())

        self._thread = threading.Thread(target=poll, name="nvml-peak", daemon=True)
        self._thread.start()

    def stop_peak(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        return self._peak

    def wait_for_baseline(self, before: int) -> dict[str, Any]:
        """Poll until used is within BASELINE_TOLERANCE_MB of `before` (BASELINE_TIMEOUT_S)."""
        started = time.monotonic()
        while True:
            used = self.used_mb()
            elapsed = time.monotonic() - started
            if used <= before + BASELINE_TOLERANCE_MB or elapsed >= BASELINE_TIMEOUT_S:
                return {"back": used <= before + BASELINE_TOLERANCE_MB, "after_s": elapsed,
                        "residual_mb": used - before}
            time.sleep(0.1)


def _receive(conn: Connection, proc: multiprocessing.process.BaseProcess,
             timeout: float) -> tuple[str, Any]:
    """The child's one report; ('error', why) if it died or hung (then it is killed)."""
    ready = wait([conn, proc.sentinel], timeout)
    if conn in ready or conn.poll(0.5):
        try:
            return conn.recv()
        except EOFError:
            pass
    if proc.is_alive():
        proc.kill()
        proc.join(5)
        return "error", f"timed out after {timeout:.0f} s"
    return "error", f"exited with code {proc.exitcode} without a report"


def run_children(ctx: multiprocessing.context.BaseContext, specs: Sequence[ChildSpec],
                 card: CardWatch | None) -> dict[str, Any]:
    """Start the children at once (several: behind a barrier, so they transcribe together);
    collect their reports, then on a GPU wait for the card to return to its earlier reading."""
    before = card.used_mb() if card else None
    specs = [ChildSpec(**{**asdict(s), "parent_baseline_mb": before}) for s in specs]
    barrier = ctx.Barrier(len(specs)) if len(specs) > 1 else None
    if card:
        card.start_peak()
    started = time.monotonic()
    children = []
    for spec in specs:
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child_main, args=(send, spec, barrier))
        proc.start()
        send.close()
        children.append((spec, proc, recv))
    reports = []
    for spec, proc, recv in children:
        status, payload = _receive(recv, proc, CHILD_TIMEOUT_S)
        proc.join(30)
        reports.append(payload if status == "ok" else {"error": payload, "role": spec.role})
    wall = time.monotonic() - started
    out: dict[str, Any] = {"reports": reports, "wall_s": wall, "before_mb": before}
    if card and before is not None:
        out["nvml_peak_above_mb"] = card.stop_peak() - before
        out["baseline"] = card.wait_for_baseline(before)
    return out


def make_clip(path: Path, seconds: float) -> str:
    """`seconds` of espeak-ng speech decoded by service.audio (the worker's decoder), saved as
    .npy; seeded noise where espeak-ng is missing. Returns what the clip is."""
    import numpy as np

    n = int(round(seconds * SAMPLE_RATE))
    try:
        if shutil.which("espeak-ng") is None:
            raise ImportError("espeak-ng is not installed")
        from service import audio  # PyAV, like tests.speech
        from tests.speech import speak_wav
    except ImportError as err:
        rng = np.random.default_rng(SEED)
        samples = (0.1 * rng.standard_normal(n)).astype(np.float32)
        what = f"seeded Gaussian noise (no speech: {err})"
    else:
        text = ("The meeting starts at nine in the morning. We will review the budget and the "
                "schedule today, and then the team will present the first version of the design. ")
        wav = speak_wav(text * max(1, int(seconds // 10) + 1), path.with_suffix(".wav"))
        samples = audio.decode(wav)
        reps = -(-n // max(1, len(samples)))
        samples = np.tile(samples, reps)[:n]
        what = "espeak-ng speech (decoded by service.audio)"
    np.save(path, samples.astype(np.float32))
    return what


# --------------------------------------------------------------------------- reporting


def _md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def weights_table(infos: Sequence[WeightInfo]) -> str:
    rows = []
    for w in infos:
        published = catalog.OFFICIAL.get(w.name, (None, None))[0]
        estimate = default_estimate(w.name)
        fp16 = w.fp16_bytes / MiB
        rows.append([
            w.name, f"{w.params_m:.1f}", published if published is not None else "n/a",
            _mb(fp16), _mb(w.fp32_bytes / MiB),
            _mb((w.params * 2 + w.fp32_bytes) / MiB),
            _mb(estimate), f"{estimate / fp16:.1f}×",
        ])
    return _md_table(
        ["model", "params M", "published M", "fp16 weights MiB", "fp32 weights MiB",
         "stock GPU load peak, expected MiB (fp16 checkpoint + fp32 model)",
         f"default estimate MiB (README × {CONFIDENCE_FACTOR})", "estimate / fp16 weights"],
        rows)


def _baseline_cell(run: dict[str, Any] | None) -> str:
    if not run or "baseline" not in run:
        return "n/a"
    b = run["baseline"]
    word = "yes" if b["back"] else "NO"
    return f"{word} ({b['after_s']:.1f} s, {b['residual_mb']:+d} MiB)"


def _need_mb(rec: dict[str, Any]) -> float | None:
    """What the worker reports as its peak: allocator peak + memory outside the allocator."""
    peaks = [rec.get("load_peak_mb"), rec.get("transcribe_peak_mb")]
    if None in peaks or rec.get("context_end_mb") is None:
        return None
    return max(peaks) + rec["context_end_mb"]


def models_table(device: str, infos: dict[str, WeightInfo],
                 runs: dict[str, dict[str, dict[str, Any]]]) -> str:
    rows = []
    for name, by_role in runs.items():
        stock, fp16 = _report(by_role.get("stock")), _report(by_role.get("fp16"))
        w = infos[name]
        if device == "cuda":
            ctx = fp16.get("context_init_mb"), fp16.get("context_end_mb")
            context = "n/a" if ctx[0] is None else f"{_mb(ctx[0])} / {_mb(ctx[1])}"
            back = (f"stock {_baseline_cell(by_role.get('stock'))}; "
                    f"fp16 {_baseline_cell(by_role.get('fp16'))}")
        else:
            context, back = "n/a", "n/a"
        rows.append([
            name, f"{w.params_m:.1f}", _mb(w.fp16_bytes / MiB), _mb(w.fp32_bytes / MiB),
            _cell(stock, "load_peak_mb"), _cell(stock, "steady_mb"),
            _cell(fp16, "load_peak_mb"), _cell(fp16, "steady_mb"),
            _cell(fp16, "transcribe_peak_mb"), context, back,
        ])
    return _md_table(
        ["model", "params M", "fp16 weights MiB", "fp32 weights MiB", "stock load peak MiB",
         "stock steady MiB", "fp16 load peak MiB", "fp16 steady MiB", "transcribe peak MiB",
         "context MiB (init / end)", "back to baseline"], rows)


def _cell(rec: dict[str, Any], key: str) -> str:
    if "error" in rec:
        return "error"
    return _mb(rec.get(key))


def details_table(runs: dict[str, dict[str, dict[str, Any]]]) -> str:
    rows = []
    for name, by_role in runs.items():
        for role in ("stock", "fp16"):
            run = by_role.get(role)
            rec = _report(run)
            if "error" in rec:
                rows.append([name, role] + ["error"] * 10 + [rec["error"]])
                continue
            nvml = run.get("nvml_peak_above_mb") if run else None
            rows.append([
                name, role, rec.get("dtype", "n/a"), _s(rec.get("load_s")),
                _s(rec.get("transcribe_s")), _mb(rec.get("weights_mb")),
                _mb(rec.get("after_load_mb")), _mb(rec.get("allocated_mb")),
                _mb(rec.get("transcribe_peak_mb")), _mb(nvml),
                rec.get("context_method", "n/a"), rec.get("tokens", "n/a"),
                rec.get("text_sha", ""),
            ])
    return _md_table(
        ["model", "path", "dtype", "load s", "transcribe s", "weights in memory MiB",
         "reserved after load (before empty_cache) MiB", "allocated steady MiB",
         "transcribe peak MiB", "NVML peak above baseline MiB", "context measured by",
         "tokens decoded", "output hash"], rows)


def throughput_rows(runs: dict[int, dict[str, Any]], audio_seconds: float) -> list[dict]:
    rows = []
    base_rate = None
    for k, run in runs.items():
        recs = run["reports"]
        errors = [r["error"] for r in recs if "error" in r]
        if errors:
            rows.append({"k": k, "error": errors[0]})
            continue
        wall = max(r["transcribe_end"] for r in recs) - min(r["transcribe_start"] for r in recs)
        rate = k * audio_seconds / wall
        base_rate = base_rate or rate  # k=1 where it ran first (the default order), else the first
        rows.append({
            "k": k, "rate": rate, "speedup": rate / base_rate,
            "task_mean_s": statistics.mean(r["transcribe_s"] for r in recs),
            "task_max_s": max(r["transcribe_s"] for r in recs),
            "load_mean_s": statistics.mean(r["load_s"] for r in recs),
            "transcribe_wall_s": wall, "wall_s": run["wall_s"],
            "nvml_peak_above_mb": run.get("nvml_peak_above_mb"),
            "baseline": run.get("baseline"),
            "hashes": sorted({r["text_sha"] for r in recs}),
            "threads": recs[0]["threads"],
        })
    return rows


def throughput_table(rows: list[dict], device: str) -> str:
    all_hashes = {h for r in rows for h in r.get("hashes", [])}
    out = []
    for r in rows:
        if "error" in r:
            out.append([r["k"]] + ["error"] * 9 + [r["error"]])
            continue
        back = "n/a" if r["baseline"] is None else _baseline_cell(r)
        out.append([
            r["k"], f"{r['rate']:.1f}", f"{r['speedup']:.2f}×",
            f"{r['task_mean_s']:.2f} / {r['task_max_s']:.2f}", f"{r['load_mean_s']:.2f}",
            f"{r['transcribe_wall_s']:.2f}", f"{r['wall_s']:.1f}", r["threads"],
            _mb(r["nvml_peak_above_mb"]) if device == "cuda" else "n/a", back,
            "yes" if len(all_hashes) == 1 else "no",
        ])
    return _md_table(
        ["tasks at once", "audio s per wall s", "speedup vs 1",
         "per-task transcribe s (mean / max)", "per-task load s (mean)", "transcription wall s",
         "end-to-end wall s", "torch threads",
         "card peak above baseline MiB", "back to baseline", "identical output (all k)"], out)


def estimates_paragraph(device: str, infos: dict[str, WeightInfo],
                        runs: dict[str, dict[str, dict[str, Any]]],
                        tp_model: str | None = None, tp_rows: Sequence[dict] = ()) -> str:
    """Measured fp16 need vs the default estimate (GPU), or the weights vs it (no GPU)."""
    lines = []
    if device == "cuda":
        lines.append(
            f"The worker reports a task's peak as allocator peak + memory outside the allocator "
            f"(service/worker.py `_peak_vram_mb`). Measured here for the fp16 path, against the "
            f"default estimate (`catalog.default_vram_mb(name) × {CONFIDENCE_FACTOR}`):")
        lines.append("")
        for name, by_role in runs.items():
            rec = _report(by_role.get("fp16"))
            need = _need_mb(rec)
            est = default_estimate(name)
            if need is None:
                lines.append(f"* {name}: not measured ({rec.get('error', 'no figures')}).")
                continue
            verdict = "fits" if need <= est else "EXCEEDS the estimate"
            peak = max(rec["load_peak_mb"], rec["transcribe_peak_mb"])
            lines.append(f"* {name}: needs {need:,.0f} MiB (peak {peak:,.0f} + outside the "
                         f"allocator {rec['context_end_mb']:,.0f}); estimate {est:,} MiB → "
                         f"{verdict}, estimate / need = {est / need:.1f}×.")
        for row in tp_rows:
            if tp_model and row.get("nvml_peak_above_mb") is not None:
                lines.append(f"* {row['k']} × {tp_model} at once: the card's used memory rose "
                             f"{row['nvml_peak_above_mb']:,} MiB at most (NVML); "
                             f"{row['k']} × estimate = {row['k'] * default_estimate(tp_model):,}"
                             " MiB.")
        lines.append("")
        lines.append("Where the estimate is several times the need, the pool admits fewer tasks "
                     "than the card holds until calibration (service/calibration.py) has "
                     "measured peaks; where it is below, the first tasks risk out-of-memory.")
    else:
        lines.append(
            "No VRAM was measured in this run (CPU). From the real dimensions alone, the fp16 "
            "weights the engine puts on a GPU compare with the default estimates as follows "
            "(the estimate must also cover the CUDA context, activations and the decoder's "
            "key/value cache, which only a GPU run measures):")
        lines.append("")
        for name in ALL_MODELS:
            w = infos[name]
            est = default_estimate(name)
            lines.append(f"* {name}: fp16 weights {w.fp16_bytes / MiB:,.0f} MiB, stock fp32 "
                         f"weights {w.fp32_bytes / MiB:,.0f} MiB; default estimate {est:,} MiB "
                         f"({est / (w.fp16_bytes / MiB):.1f}× the fp16 weights).")
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__,
           "torch CUDA": str(torch.version.cuda)}
    for package in ("openai-whisper", "faster-whisper", "ctranslate2"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def _load_average() -> float | None:
    """The 1-minute load average: other programs' CPU use skews every timing here."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines(device: str, gpu: int) -> list[str]:
    lines = [f"- CPU: {_cpu_model()}, {os.cpu_count()} logical cores, {platform.system()} "
             f"{platform.release()}"]
    if device == "cuda":
        import pynvml

        info = NvmlBackend([gpu]).devices()[0]
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else driver
        lines.insert(0, f"- GPU {gpu}: {info.name}, {info.total_mb:,} MiB, driver {driver}")
    else:
        lines.insert(0, "- device: CPU (no GPU in this run)")
    lines.append("- " + ", ".join(f"{k} {v}" for k, v in _versions().items()))
    return lines


# --------------------------------------------------------------------------- main


def default_device() -> str:
    """torch.cuda.is_available() through NVML only: the parent must not initialise CUDA."""
    import torch

    previous = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    try:
        return "cuda" if torch.cuda.is_available() else "cpu"
    finally:
        if previous is None:
            os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
        else:
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = previous


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cuda", "cpu"],
                    help="default: cuda where torch sees a GPU, else cpu")
    ap.add_argument("--models", type=_csv,
                    help=f"default: {','.join(ALL_MODELS)} on cuda, {','.join(CPU_MODELS)} on cpu")
    ap.add_argument("--concurrency", type=lambda s: [int(x) for x in _csv(s)], default=[1, 2, 4],
                    help="tasks at once for the throughput runs (default 1,2,4; empty: none)")
    ap.add_argument("--throughput-model", help="default: turbo on cuda, tiny on cpu")
    ap.add_argument("--audio-seconds", type=float, default=30.0)
    ap.add_argument("--max-tokens", type=int, default=128,
                    help="at most this many tokens per 30-s window (random weights rarely stop by "
                         "themselves; 128 is roughly what 30 s of speech yields); default 128")
    ap.add_argument("--engines", type=_csv, default=list(catalog.ENGINES),
                    help="openai-whisper, faster-whisper or both (default both)")
    ap.add_argument("--compute-types", type=_csv,
                    help="faster-whisper's, per model (default "
                         f"{','.join(probe_faster.CUDA_COMPUTE)} on cuda, "
                         f"{','.join(probe_faster.CPU_COMPUTE)} on cpu); the first is also "
                         "the throughput runs'")
    ap.add_argument("--gpu", type=int, default=0, help="card index (NVML / CUDA_VISIBLE_DEVICES)")
    ap.add_argument("--out", type=Path,
                    help="Markdown report (default docs/gpu-measurements.md; with "
                         "--weights-only only when given)")
    ap.add_argument("--cache-dir", type=Path,
                    help="keep the random-weight checkpoints here (default: a temp folder, "
                         "removed at the end; large-v3 alone is ~3 GB)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                    help="start no new step after this many seconds (default %(default)s)")
    ap.add_argument("--note", default="",
                    help="a paragraph put at the top of the report (e.g. why no GPU figures)")
    ap.add_argument("--weights-only", action="store_true",
                    help="only parameter counts and weight sizes from the dimensions (no device)")
    args = ap.parse_args(argv)
    unknown = [m for m in (args.models or []) if m not in MODEL_DIMS]
    if args.throughput_model and args.throughput_model not in MODEL_DIMS:
        unknown.append(args.throughput_model)
    if unknown:
        ap.error(f"unknown model(s) {unknown}; known: {', '.join(MODEL_DIMS)}")
    if args.audio_seconds <= 0 or not 1 <= args.max_tokens <= 224:
        ap.error("--audio-seconds must be > 0 and --max-tokens within 1..224")
    if any(k < 1 for k in args.concurrency):
        ap.error("--concurrency takes positive integers")
    if not args.engines or set(args.engines) - set(catalog.ENGINES):
        ap.error(f"--engines takes {' and/or '.join(catalog.ENGINES)}")
    return args


def _write(path: Path | None, text: str) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    log.info("wrote %s", path)


def weights_only(args: argparse.Namespace) -> int:
    names = args.models or list(ALL_MODELS)
    table = weights_table([weight_info(n) for n in names])
    print(table)
    _write(args.out, "# Whisper weight sizes from the real dimensions\n\n"
           f"Generated by `python bench/gpu_probe.py {shlex.join(sys.argv[1:])}` on "
           f"{datetime.now(timezone.utc):%Y-%m-%d}.\n\n" + table + "\n")
    print(f"RESULT device=none models={len(names)} fp16_vs_stock_load_peak=n/a "
          f"back_to_baseline=n/a faster_models=0 faster_float16_vs_openai_fp16_peak=n/a")
    return 0


@dataclass
class Probe:
    args: argparse.Namespace
    device: str
    models: list[str]
    tp_model: str | None
    work: Path
    models_dir: Path
    clip_what: str = ""
    started: float = field(default_factory=time.monotonic)
    load_at_start: float | None = field(default_factory=lambda: _load_average())
    skipped: list[str] = field(default_factory=list)
    finished: bool = False
    runs: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    tp_runs: dict[int, dict[str, Any]] = field(default_factory=dict)
    # faster-whisper: model → compute type → run; (how, k) → run; why it did not run
    fw_runs: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    fw_tp_runs: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    fw_missing: str | None = None

    def spec(self, role: str, model: str, threads: int = 0, compute_type: str = "",
             batch: int = 0) -> ChildSpec:
        return ChildSpec(role=role, model=model, models_dir=str(self.models_dir),
                         device=self.device, gpu=self.args.gpu, clip=str(self.work / "clip.npy"),
                         max_tokens=self.args.max_tokens, threads=threads,
                         compute_type=compute_type, batch=batch)

    @property
    def openai(self) -> bool:
        return catalog.OPENAI in self.args.engines

    @property
    def faster(self) -> bool:
        return catalog.FASTER in self.args.engines and self.fw_missing is None

    @property
    def compute_types(self) -> list[str]:
        return self.args.compute_types or list(
            probe_faster.CUDA_COMPUTE if self.device == "cuda" else probe_faster.CPU_COMPUTE)


def run_probe(args: argparse.Namespace) -> int:
    import torch

    device = args.device or default_device()
    models = args.models or list(ALL_MODELS if device == "cuda" else CPU_MODELS)
    tp_model = None if not args.concurrency else (
        args.throughput_model or ("turbo" if device == "cuda" else "tiny"))
    out = args.out or REPO / "docs" / "gpu-measurements.md"
    work = Path(tempfile.mkdtemp(prefix="gpu-probe-"))
    models_dir = args.cache_dir or work / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    ctx = multiprocessing.get_context("spawn")
    card = CardWatch(args.gpu) if device == "cuda" else None
    probe = Probe(args, device, models, tp_model, work, models_dir)
    infos = {n: weight_info(n) for n in dict.fromkeys([*ALL_MODELS, *models])}

    def checkpoint() -> None:  # a run cut off by a time limit still leaves its figures
        _write(out, render(probe, infos)[0])

    def over_budget(step: str) -> bool:
        if time.monotonic() - probe.started <= args.budget_s:
            return False
        log.warning("over the %.0f-s budget: skipping %s", args.budget_s, step)
        probe.skipped.append(step)
        return True

    if catalog.FASTER in args.engines:
        probe.fw_missing = probe_faster.available()
        if probe.fw_missing:
            log.warning("faster-whisper part skipped: %s", probe.fw_missing)
    try:
        probe.clip_what = make_clip(work / "clip.npy", args.audio_seconds)
        wanted = [*models, *([tp_model] if tp_model else [])]
        ensure_checkpoints(ctx, wanted, models_dir, args.seed,
                           ct2=wanted if probe.faster else ())
        if torch.cuda.is_initialized():  # would skew every NVML reading of the children
            raise SystemExit("the parent initialised CUDA; the probe's figures would be wrong")
        cpus = os.cpu_count() or 1
        for name in models:
            if over_budget(f"model {name}"):
                continue
            if probe.openai:
                probe.runs[name] = {}
                for role in ("stock", "fp16"):
                    log.info("%s: %s path", name, role)
                    probe.runs[name][role] = run_children(ctx, [probe.spec(role, name)], card)
                    _log_report(name, role, probe.runs[name][role])
            if probe.faster:
                probe.fw_runs[name] = {}
                for compute in probe.compute_types:
                    log.info("%s: faster-whisper %s", name, compute)
                    probe.fw_runs[name][compute] = run_children(
                        ctx, [probe.spec("faster", name, cpus if device == "cpu" else 0,
                                         compute)], card)
                    _log_report(name, f"faster-whisper {compute}", probe.fw_runs[name][compute])
            checkpoint()
        for k in args.concurrency:
            if over_budget(f"throughput k={k}"):
                continue
            threads = max(1, cpus // k) if device == "cpu" else 0  # the scheduler's rule
            if probe.openai:
                log.info("throughput: %d × %s at once", k, tp_model)
                specs = [probe.spec("throughput", tp_model, threads) for _ in range(k)]
                probe.tp_runs[k] = run_children(ctx, specs, card)
            if probe.faster:
                compute = probe.compute_types[0]
                log.info("throughput: %d × %s at once, faster-whisper %s", k, tp_model, compute)
                specs = [probe.spec("faster-tasks", tp_model, threads, compute)
                         for _ in range(k)]
                probe.fw_tp_runs[("tasks", k)] = run_children(ctx, specs, card)
                if k > 1:
                    log.info("throughput: %s batched %d, faster-whisper %s", tp_model, k, compute)
                    probe.fw_tp_runs[("batched", k)] = run_children(ctx, [probe.spec(
                        "faster-batched", tp_model, cpus if device == "cpu" else 0, compute,
                        batch=k)], card)
            checkpoint()
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the clip, and the checkpoints unless cached
    probe.finished = True
    text, result = render(probe, infos)
    _write(out, text)
    print(text.split("\n```\nRESULT", 1)[0].rstrip())  # the tables; the RESULT line once, last
    print(result)
    return 0


def _log_report(name: str, role: str, run: dict[str, Any]) -> None:
    rec = _report(run)
    if "error" in rec:
        log.error("%s %s: %s", name, role, rec["error"])
    else:
        log.info("%s %s: load %.2f s peak %.0f steady %.0f; transcribe %.2f s peak %.0f MiB",
                 name, role, rec["load_s"], rec["load_peak_mb"], rec["steady_mb"],
                 rec["transcribe_s"], rec["transcribe_peak_mb"])


def _fmt_load(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _shown_argv(argv: list[str]) -> list[str]:
    """The command line as the report shows it: the --note text is already at the top."""
    shown, skip = [], False
    for arg in argv:
        if skip:
            shown.append("<note above>")
            skip = False
        elif arg == "--note":
            shown.append(arg)
            skip = True
        else:
            shown.append("--note=<note above>" if arg.startswith("--note=") else arg)
    return shown


def openai_need(probe: Probe) -> dict[str, float | None]:
    """Per model, what the openai-whisper fp16 path needed: on a GPU the worker's own figure
    (allocator peak + outside it), on the CPU its RSS peak."""
    out: dict[str, float | None] = {}
    for name, by_role in probe.runs.items():
        rec = _report(by_role.get("fp16"))
        if probe.device == "cuda":
            out[name] = _need_mb(rec)
        elif "error" not in rec and rec:
            out[name] = max(rec["load_peak_mb"], rec["transcribe_peak_mb"])
    return out


def faster_sections(probe: Probe) -> list[str]:
    """The faster-whisper part of the report (or why it did not run)."""
    if catalog.FASTER not in probe.args.engines:
        return []
    if probe.fw_missing:
        return ["## faster-whisper (CTranslate2)", "", f"Not measured: {probe.fw_missing}.", ""]
    device = probe.device
    unit = ("NVML memory of the child's PID (CUDA context included), sampled every 20 ms by "
            "`service.gpu.PeakSampler`, the worker's own measurement" if device == "cuda"
            else "RSS above the child's baseline after imports (host memory, not VRAM)")

    def estimate(name: str, compute: str) -> int:
        return int(catalog.default_vram_mb(name, catalog.FASTER, compute) * CONFIDENCE_FACTOR)

    parts = [
        f"## faster-whisper (CTranslate2) per model and compute type ({device})", "",
        _md_table(probe_faster.MODELS_HEADER, probe_faster.models_rows(
            probe.fw_runs, openai_need(probe), estimate, device)), "",
        "The same random weights as above, written as CTranslate2 folders "
        "(`bench/ct2_models.py`, float16 on disk) and loaded with `faster_whisper.WhisperModel"
        "(compute_type=…)`; the same clip and bounded decoding. Memory: " + unit + ". After "
        "load = right after loading; peak = the most during loading and transcribing. The "
        "default estimate is `catalog.default_vram_mb(name, 'faster-whisper', compute type) × "
        f"{CONFIDENCE_FACTOR}`" + (" (× peak: how much larger it is)." if device == "cuda"
                                   else "; no VRAM was measured in this run.") +
        " Peak / openai fp16 need compares with the openai-whisper fp16 path's figure above "
        "on the same weights.", "",
    ]
    if probe.fw_tp_runs:
        rows = probe_faster.throughput_rows(probe.fw_tp_runs)
        parts += [
            f"## faster-whisper throughput: {probe.tp_model}, k tasks at once vs one task "
            "batched k", "",
            _md_table(probe_faster.THROUGHPUT_HEADER, probe_faster.throughput_cells(rows, device)),
            "", "k tasks at once = k processes, each the clip once, started together after all "
            "have loaded; batched k = one process transcribing k copies of the clip with "
            "`BatchedInferencePipeline(batch_size=k)`, one 30-s window per copy. Audio s per "
            "wall s = the audio transcribed / (last end − first start). Memory = the sum of the "
            "processes' own peaks" + (", and the card's used memory above its earlier reading "
                                      "(NVML, from the parent)." if device == "cuda" else "."),
            "",
        ]
    return parts


def render(probe: Probe, infos: dict[str, WeightInfo]) -> tuple[str, str]:
    """The Markdown report and the RESULT line."""
    args, device = probe.args, probe.device
    elapsed = time.monotonic() - probe.started
    unit = "VRAM (torch allocator, reserved)" if device == "cuda" else \
        "RSS above the child's baseline after imports (host memory, not VRAM)"
    command = "python bench/gpu_probe.py " + shlex.join(_shown_argv(sys.argv[1:]))
    parts = ["# Whisper memory and throughput: stock loading vs our fp16 path, and "
             "faster-whisper", ""]
    if args.note:
        parts += [args.note.strip(), ""]
    if device == "cpu":
        parts += ["**This run used the CPU: no VRAM figure below is measured.** The memory "
                  "columns are host RSS; on a GPU machine run "
                  "`python bench/gpu_probe.py --out docs/gpu-measurements.md` to fill them.", ""]
    if not probe.finished:
        parts += ["**Partial: written while the run was still going (or it was cut off).**", ""]
    parts += [
        "## How it was run", "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; total {elapsed:.0f} s; "
        f"1-minute load average {_fmt_load(probe.load_at_start)} at the start, "
        f"{_fmt_load(_load_average())} at the end",
        f"- command: `{command.strip()}`",
        *machine_lines(device, args.gpu),
        f"- weights: random (seed {args.seed}) with the real dimensions, fp16 checkpoints "
        "stored like the official ones; stock = `whisper.load_model(path, device)`, fp16 = "
        "`service.engine.load_model(name, models_dir, device, allow_download=False)`",
        f"- clip: {args.audio_seconds:g} s of {probe.clip_what}; `service.engine.transcribe` "
        f"with language en, greedy (temperature 0), no timestamps (timestamp tokens suppressed: "
        f"random weights emit them and whisper would seek to them), at most {args.max_tokens} "
        "tokens per 30-s window (random weights decode garbage and rarely stop early)",
        "- every measurement in a fresh spawned process; the parent never touches CUDA (on a "
        "GPU it reads NVML only)",
        f"- memory figures: {unit}, in MiB",
        *([f"- skipped (over the {args.budget_s:.0f}-s budget): {', '.join(probe.skipped)}"]
          if probe.skipped else []),
        "",
        "## Weights from the real dimensions (all models)", "",
        weights_table([infos[n] for n in ALL_MODELS]), "",
        "Params count every tensor of the checkpoint (the encoder's sinusoid positions "
        "included). fp16 weights are what `service.engine` holds on a GPU (LayerNorm and "
        "buffers stay fp32); fp32 is what stock `load_model` holds after its `.to(device)`.",
        "",
        f"## Per model ({device})", "",
        models_table(device, infos, probe.runs), "",
    ]
    if device == "cuda":
        parts += ["Load peak = `max_memory_reserved()` after loading; steady = "
                  "`memory_reserved()` after `empty_cache()`; transcribe peak = fp16 path, peak "
                  "reset after loading. Context = memory the process holds outside torch's "
                  "allocator right after `torch.zeros(1, device='cuda')` / after the "
                  f"transcription. Back to baseline = NVML used within {BASELINE_TOLERANCE_MB} "
                  f"MiB of the reading before the child (polled up to {BASELINE_TIMEOUT_S:.0f} s "
                  "after it exited).", ""]
    else:
        parts += ["On the CPU the engine keeps fp32 (`service/engine.py` `_place` casts only for "
                  "CUDA), so the 'fp16' columns are the engine's path in fp32 here. Load peak = "
                  "VmHWM after loading, steady = RSS after loading, transcribe peak = VmHWM "
                  "after the transcription (reset after loading), all minus the RSS after "
                  "imports.", ""]
    parts += ["### Details", "", details_table(probe.runs), ""]
    tp_rows = throughput_rows(probe.tp_runs, args.audio_seconds)
    if probe.tp_runs:
        threads_note = ("torch threads = cores // tasks (the scheduler's rule on the CPU)"
                        if device == "cpu" else "torch's default threads")
        parts += [f"## Throughput: {probe.tp_model}, k tasks at once on one "
                  f"{'card' if device == 'cuda' else 'CPU'}", "",
                  throughput_table(tp_rows, device), "",
                  f"Each task loads (engine path), waits until all have loaded, then transcribes "
                  f"the same {args.audio_seconds:g}-s clip; audio s per wall s = k × clip / (last "
                  f"end − first start of the transcriptions); {threads_note}.", ""]
    parts += faster_sections(probe)
    parts += ["## What this means for the default estimates", "",
              estimates_paragraph(device, infos, probe.runs, probe.tp_model, tp_rows), ""]
    ratios = []
    for by_role in probe.runs.values():
        stock, fp16 = _report(by_role.get("stock")), _report(by_role.get("fp16"))
        if stock.get("load_peak_mb") and fp16.get("load_peak_mb") is not None:
            ratios.append(fp16["load_peak_mb"] / stock["load_peak_mb"])
    ratio = f"{statistics.median(ratios):.3f}" if ratios else "n/a"
    if device == "cuda":
        flags = [run["baseline"]["back"] for by_role in probe.runs.values()
                 for run in by_role.values()] + [r["baseline"]["back"] for r in tp_rows
                                                 if r.get("baseline")]
        back = "all" if flags and all(flags) else "some"
    else:
        back = "n/a"
    first = probe.compute_types[0]
    result = (f"RESULT device={device} models={len(probe.runs)} "
              f"fp16_vs_stock_load_peak={ratio} back_to_baseline={back} "
              f"faster_models={len(probe.fw_runs)} faster_{first}_vs_openai_fp16_peak="
              f"{probe_faster.peak_ratio(probe.fw_runs, first, openai_need(probe))}")
    parts += ["```", result, "```", ""]
    return "\n".join(parts), result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.weights_only:
        return weights_only(args)
    return run_probe(args)


if __name__ == "__main__":
    sys.exit(main())
