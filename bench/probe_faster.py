"""bench/gpu_probe.py's faster-whisper (CTranslate2) side: the measuring child and its tables.

The same random weights as the openai-whisper side, written as CTranslate2 folders
(bench/ct2_models.py), loaded with ``faster_whisper.WhisperModel`` per compute type. CTranslate2
allocates outside torch, so on a GPU the figures are what the service's worker measures itself:
NVML's memory for the child's PID, sampled in a thread (``service.gpu.PeakSampler``; the card's
used-memory rise where the driver gives no per-process figure). They include the CUDA context.
Decoding is bounded as on the openai side: greedy, temperature 0, no timestamps (timestamp
tokens suppressed), at most ``max_tokens`` per 30-s window.

Throughput compares k tasks at once (k processes, one clip each) with one task that transcribes
k copies of the clip batched k (``BatchedInferencePipeline``, one 30-s window per copy).
"""

from __future__ import annotations

import hashlib
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CUDA_COMPUTE = ("float16", "int8_float16")  # the service's auto on a GPU, and prefer_memory
CPU_COMPUTE = ("int8", "float32")  # auto on the CPU, and CTranslate2's unquantized path


def available() -> str | None:
    """None when faster-whisper can run here, else why not (the report says it)."""
    try:
        import ctranslate2  # noqa: F401
        import faster_whisper  # noqa: F401
    except ImportError as err:
        return f"faster-whisper is not installed ({err})"
    return None


def _bounded_options(n_vocab: int, max_tokens: int) -> dict[str, Any]:
    """Greedy, no timestamps, at most max_tokens per window: random weights decode garbage
    and emit timestamp tokens even after <|notimestamps|>. The tokens suppressed are the
    openai-whisper side's (its non-speech symbols and the timestamps), so both engines take
    the same greedy path through the same weights."""
    from bench.ct2_models import whisper_tokenizer

    tokenizer = whisper_tokenizer(n_vocab)
    suppress = {*tokenizer.non_speech_tokens, *range(tokenizer.timestamp_begin, n_vocab)}
    return dict(language="en", task="transcribe", beam_size=1, temperature=0.0,
                without_timestamps=True, max_new_tokens=max_tokens,
                suppress_tokens=sorted(suppress),
                no_speech_threshold=None, compression_ratio_threshold=None,
                log_prob_threshold=None, vad_filter=False)


def measure(spec: Any, n_vocab: int, rss_mb: Any, peak_rss_mb: Any, reset_peak_rss: Any,
            barrier: Any = None) -> dict[str, Any]:
    """Load spec.model's CTranslate2 folder with spec.compute_type, transcribe the clip
    (spec.batch copies, batched, when spec.batch > 1); the figures. Runs in a spawned child
    whose CUDA_VISIBLE_DEVICES the caller has set."""
    import numpy as np
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    cuda = spec.device == "cuda"
    clip = np.load(spec.clip).astype(np.float32)
    copies = max(1, spec.batch)
    audio = np.tile(clip, copies)
    threads = spec.threads or min(4, os.cpu_count() or 1)  # CTranslate2's own default: 4
    rec: dict[str, Any] = {"role": spec.role, "model": spec.model, "pid": os.getpid(),
                           "threads": threads, "compute_type": spec.compute_type,
                           "batch": copies, "audio_s": len(audio) / 16_000}
    baseline = rss_mb()
    sampler = backend = None
    if cuda:
        from service.gpu import NvmlBackend, PeakSampler

        backend = NvmlBackend([spec.gpu])
        sampler = PeakSampler(backend, spec.gpu, os.getpid(), interval_s=0.02).start()
    started = time.perf_counter()
    model = WhisperModel(str(Path(spec.models_dir) / spec.model), device=spec.device,
                         device_index=0, compute_type=spec.compute_type, cpu_threads=threads,
                         local_files_only=True)
    rec["load_s"] = time.perf_counter() - started
    if cuda:
        rec["load_peak_mb"] = sampler.sample()
        own = backend.process_used_mb(spec.gpu, os.getpid())
        rec["per_process"] = bool(own)
        rec["steady_mb"] = own if own else rec["load_peak_mb"]
    else:
        rec["load_peak_mb"] = peak_rss_mb() - baseline
        rec["steady_mb"] = rss_mb() - baseline
        rec["peak_reset"] = reset_peak_rss()
    options = _bounded_options(n_vocab, spec.max_tokens)
    if barrier is not None:
        barrier.wait(300)
    rec["transcribe_start"] = time.monotonic()
    if copies > 1:
        window = len(clip) / 16_000
        clips = [{"start": i * window, "end": (i + 1) * window} for i in range(copies)]
        segments, _ = BatchedInferencePipeline(model).transcribe(
            audio, batch_size=copies, clip_timestamps=clips, **options)
    else:
        segments, _ = model.transcribe(audio, clip_timestamps="0",
                                       condition_on_previous_text=False, **options)
    segments = list(segments)  # a generator: decoding happens here
    rec["transcribe_end"] = time.monotonic()
    rec["transcribe_s"] = rec["transcribe_end"] - rec["transcribe_start"]
    if cuda:
        rec["transcribe_peak_mb"] = sampler.stop()
    else:
        rec["transcribe_peak_mb"] = peak_rss_mb() - baseline
    rec["segments"] = len(segments)
    rec["tokens"] = sum(len(s.tokens) for s in segments)
    rec["text_sha"] = hashlib.sha256("".join(s.text for s in segments).encode()).hexdigest()[:12]
    return rec


# --------------------------------------------------------------------------- tables


def mb(value: float | None) -> str:
    """A memory figure as the tables show it (gpu_probe's tables too)."""
    return "n/a" if value is None else f"{value:,.0f}"


def first_report(run: dict[str, Any] | None) -> dict[str, Any]:
    """The first child's report of a run ({} when it did not run; gpu_probe's too)."""
    return run["reports"][0] if run else {}


def models_rows(runs: dict[str, dict[str, dict[str, Any]]], openai_need: dict[str, float | None],
                estimate: Any, device: str) -> list[list[Any]]:
    """One row per model and compute type: load, memory after loading, peak, the default
    estimate, and the peak against the openai-whisper fp16 path's need on the same weights."""
    rows = []
    for name, by_type in runs.items():
        for compute, run in by_type.items():
            rec = first_report(run)
            if "error" in rec:
                rows.append([name, compute] + ["error"] * 7 + [rec["error"]])
                continue
            peak = max(rec["load_peak_mb"], rec["transcribe_peak_mb"])
            need = openai_need.get(name)
            est = estimate(name, compute)
            rows.append([
                name, compute, f"{rec['load_s']:.2f}", f"{rec['transcribe_s']:.2f}",
                mb(rec["steady_mb"]), mb(peak),
                f"{est:,}" + (f" ({est / peak:.1f}×)" if device == "cuda" and peak else ""),
                f"{peak / need:.2f}" if need else "n/a",
                rec["tokens"], rec["text_sha"],
            ])
    return rows


MODELS_HEADER = ["model", "compute type", "load s", "transcribe s", "after load MiB",
                 "peak MiB", "default estimate MiB (× peak)", "peak / openai fp16 need",
                 "tokens decoded", "output hash"]


def throughput_rows(runs: dict[tuple[str, int], dict[str, Any]]) -> list[dict[str, Any]]:
    """('tasks', k): k processes at once; ('batched', k): one process, k copies batched k."""
    rows, base = [], None
    for (how, k), run in runs.items():
        recs = run["reports"]
        errors = [r["error"] for r in recs if "error" in r]
        if errors:
            rows.append({"how": how, "k": k, "error": errors[0]})
            continue
        wall = max(r["transcribe_end"] for r in recs) - min(r["transcribe_start"] for r in recs)
        rate = sum(r["audio_s"] for r in recs) / wall
        base = base or rate
        rows.append({"how": how, "k": k, "rate": rate, "speedup": rate / base,
                     "wall_s": wall,
                     "task_mean_s": statistics.mean(r["transcribe_s"] for r in recs),
                     "peak_mb": run.get("nvml_peak_above_mb"),
                     "own_peak_mb": sum(max(r["load_peak_mb"], r["transcribe_peak_mb"])
                                        for r in recs),
                     "threads": recs[0]["threads"], "compute_type": recs[0]["compute_type"]})
    return rows


def throughput_cells(rows: Sequence[dict[str, Any]], device: str) -> list[list[Any]]:
    out = []
    for r in rows:
        label = (f"{r['k']} task{'s' if r['k'] > 1 else ''} at once" if r["how"] == "tasks"
                 else f"1 task, batched {r['k']}")
        if "error" in r:
            out.append([label] + ["error"] * 6 + [r["error"]])
            continue
        out.append([label, r["compute_type"], f"{r['rate']:.1f}", f"{r['speedup']:.2f}×",
                    f"{r['wall_s']:.2f}", f"{r['task_mean_s']:.2f}", r["threads"],
                    mb(r["own_peak_mb"]) + (f" (card {mb(r['peak_mb'])})"
                                             if device == "cuda" else "")])
    return out


THROUGHPUT_HEADER = ["how", "compute type", "audio s per wall s", "speedup vs 1 task",
                     "transcription wall s", "per-task transcribe s (mean)", "threads",
                     "memory MiB (sum of the tasks' peaks)"]


def peak_ratio(runs: dict[str, dict[str, dict[str, Any]]], compute: str,
               openai_need: dict[str, float | None]) -> str:
    """Median over models of faster-whisper's peak (at `compute`) / openai fp16's need."""
    ratios = []
    for name, by_type in runs.items():
        rec, need = first_report(by_type.get(compute)), openai_need.get(name)
        if need and "error" not in rec and rec:
            ratios.append(max(rec["load_peak_mb"], rec["transcribe_peak_mb"]) / need)
    return f"{statistics.median(ratios):.3f}" if ratios else "n/a"
