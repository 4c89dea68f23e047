"""The worker child process: load model → decode → transcribe → write outputs → report → exit.

It never touches the database: the parent is the single writer on its node. It gets a
`messages.Job` over a Pipe and answers with the small messages of service/messages.py (Ready,
Loaded, Progress, Done or Error, its own Log records, or StartupError when torch cannot even be
imported). The process exits after its job (a warm worker after the next ones of the same
model), which is what really returns its VRAM to the card.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .messages import Done, Error, Job, Loaded, Log, Progress, Ready, StartupError, Stop

if TYPE_CHECKING:
    from .engines import Engine
    from .pieces import Piece

log = logging.getLogger(__name__)


def exit_with_parent() -> None:
    """Exit when the parent dies (even by kill -9): no orphan holds GPU memory.
    (bench/gpu_probe.py's measuring children use it too.)"""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def wait() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(3)

    threading.Thread(target=wait, name="parent-watch", daemon=True).start()


def _is_oom(err: BaseException) -> bool:
    text = f"{type(err).__name__}: {err}"
    return ("OutOfMemoryError" in text or "out of memory" in text
            or "cudaErrorInvalidDevice" in text or "CUBLAS_STATUS_ALLOC_FAILED" in text)


class _Conn:
    """The pipe to the parent, safe to send on from several threads (the log handler, the
    sha256 thread, progress callbacks): two pickles must never interleave."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def send(self, obj: object) -> None:
        with self._lock:
            self._conn.send(obj)

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


class PipeLogHandler(logging.Handler):
    """Sends the worker's log records to the parent, which writes them into the service log
    (and so the Windows Event Log): a service's worker has no console anyone reads."""

    def __init__(self, conn: _Conn) -> None:
        super().__init__(logging.INFO)
        self.conn = conn

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.conn.send(Log(record.levelno, record.name, self.format(record)))
        except Exception:  # noqa: BLE001 - the parent is gone: nothing left to tell
            pass


def _ignore_console_signals() -> None:
    """Ctrl-C, Ctrl-Break and a closed console reach the whole process group (or console);
    the parent decides what happens to its workers and stops them itself."""
    for name in ("SIGINT", "SIGBREAK", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


def main(conn: Connection) -> None:
    """Entry point of a spawned worker process."""
    exit_with_parent()
    _ignore_console_signals()
    conn = _Conn(conn)
    root = logging.getLogger()
    root.handlers[:] = [PipeLogHandler(conn)]
    root.setLevel(logging.INFO)
    # Heavy imports happen here, before a job is assigned: a pre-started worker hides them.
    try:
        import numpy  # noqa: F401
        import torch  # noqa: F401
        import whisper  # noqa: F401

        from . import audio, engine, outputs, vad  # noqa: F401
    except BaseException as err:  # noqa: BLE001 - e.g. OSError [WinError 126] … c10.dll
        conn.send(StartupError(startup_message(err)))
        conn.close()
        logging.shutdown()
        os._exit(1)

    vad.warm_up()  # its first run is slow: before the job, where a pre-started worker hides it
    conn.send(Ready())
    loaded: tuple[str, object] | None = None  # (model name, model) kept while warm
    try:
        while True:
            try:
                job = conn.recv()
            except EOFError:
                return
            if isinstance(job, Stop):
                return
            try:
                loaded = run(job, conn, loaded)
            except Exception as err:  # noqa: BLE001 - every error becomes a report
                conn.send(Error(*classify(err)))
                return  # after an error start clean: exiting returns all memory
            # Warm: wait for the next file of the same model, then exit to free the VRAM.
            if job.keep_warm_seconds <= 0 or not conn.poll(job.keep_warm_seconds):
                break
    finally:
        conn.close()
    # Leave at once: the report is sent and the outputs are on disk. Python's normal teardown
    # of torch takes ~0.7 s of CPU that would land on the next task (measured, bench/).
    logging.shutdown()
    os._exit(0)


# Imported once by the forkserver (POSIX), never fatally: see service/preload.py.
PRELOAD = ["service.preload"]


def startup_message(err: BaseException) -> str:
    """Why a worker could not start, in words a user can act on, with the library's own."""
    last = traceback.extract_tb(err.__traceback__)[-1:] if err.__traceback__ else []
    where = f" (in {last[0].filename}, line {last[0].lineno})" if last else ""
    return (f"The worker process could not start: {type(err).__name__}: {err}{where}. "
            "PyTorch or Whisper is not installed correctly in this Python environment "
            "(on Windows a missing DLL such as c10.dll usually means a broken torch install or "
            "a missing Visual C++ runtime); reinstall it, then restart the service.")


def classify(err: BaseException) -> tuple[str, str, bool, bool]:
    """(kind, plain message, retryable, resource) for an exception raised while running a job."""
    from . import audio, engine, fasterwhisper, fsops, i18n

    if isinstance(err, (fsops.NotRegularFileError, fsops.UnsafePathError)):
        return "unsafe_path", f"Refused: {err}", False, False
    if isinstance(err, engine.ModelNotAvailable):
        return "model_missing", str(err), False, False
    if isinstance(err, audio.NotAudioError):
        return "not_audio", str(err), False, False
    if isinstance(err, engine.EngineStuck):  # the seed is fixed: a retry would stall again
        return "engine_stuck", str(err), False, False
    if fasterwhisper.is_missing_cuda_library(err):  # a retry would fail the same way
        return "gpu_library", i18n.t("engine.cuda_library", "en", error=err), False, False
    if _is_oom(err):
        msg = "The GPU ran out of memory; the task will wait and retry."
        return "out_of_memory", msg, True, True
    if isinstance(err, OSError):
        return "io_error", f"Could not read or write a file: {err}", True, False
    log.error("unexpected error:\n%s", "".join(traceback.format_exception(err)))
    return "error", f"Unexpected error: {type(err).__name__}: {err}", True, False


def run(job: Job, conn: Connection, loaded: tuple[str, object] | None = None) -> tuple[str, object]:
    """One file. `loaded` is the model a warm worker still holds (reused if the same)."""
    if job.gpu is not None:  # before CUDA is first touched
        from .gpu import cuda_env

        os.environ.update(cuda_env(job.gpu, job.gpu_uuid))
    import torch

    from . import audio, engine, engines, fsops, options, outputs, speakers

    if job.threads > 0:
        torch.set_num_threads(job.threads)
    device = engine.pick_device() if job.gpu is not None else "cpu"
    opts = options.Decoding.model_validate(job.decoding)
    runtime = engines.get(opts.engine)
    key = f"{opts.engine}:{job.model}:{opts.compute_type}:{opts.prefer_memory}"
    measure = device.startswith("cuda") and runtime.name != engines.OPENAI
    sampler = _vram_sampler(job) if measure else None  # from before loading
    t0 = time.perf_counter()
    if loaded is not None and loaded[0] == key:
        model = loaded[1]
    else:
        loaded = None  # a warm worker's other model goes before the next one loads
        model = runtime.load(job.model, Path(job.models_dir), device, job.allow_download, opts,
                             job.threads)
    load_seconds = time.perf_counter() - t0
    conn.send(Loaded(load_seconds))

    # Never through a link: the file (or its folder) may have been swapped for one pointing at
    # a private file since the task was recorded. Checked before and after decoding.
    before = None
    if job.inbox:
        try:
            before = fsops.check_source(job.inbox, job.source_path)
        except FileNotFoundError:
            pass  # decoding says "no longer there" in plain words
    digest = _Sha256(Path(job.source_path))  # reads the file while the model works: no wall time
    last = [0.0]

    def progress(fraction: float) -> None:
        now = time.monotonic()
        if now - last[0] >= job.progress_seconds:
            last[0] = now
            conn.send(Progress(float(fraction)))

    t1 = time.perf_counter()
    # decoded a piece at a time while transcribing: memory does not grow with the duration
    result, meta = transcribe(job, model, audio.stream(Path(job.source_path)), device, progress,
                              runtime)
    transcribe_seconds = time.perf_counter() - t1
    if before is not None:
        after = fsops.check_source(job.inbox, job.source_path)
        if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            raise fsops.NotRegularFileError(0, "the file was replaced while it was read",
                                            job.source_path)
    audio_seconds = meta.pop("audio_seconds")
    meta = {
        "model": job.model,
        "source": job.source_name,
        "device": device,
        "engine": runtime.name,
        "compute_type": runtime.compute_type(model),
        "audio_seconds": round(audio_seconds, 3),
        "load_seconds": round(load_seconds, 3),
        "transcribe_seconds": round(transcribe_seconds, 3),
        "peak_rss_mb": None,  # below, once everything that holds memory has run
        **meta,
    }
    # Speaker labels: after the shared post-processing, on the CPU, inside the time limit.
    diarize_seconds = speakers.apply(result, lambda: audio.stream(Path(job.source_path)),
                                     job.decoding, meta, job.ui_language)
    meta["peak_rss_mb"] = peak_rss_mb()
    if job.outbox:  # the output folder may have been replaced by a link since the start
        fsops.ensure_inside(job.outbox, job.out_dir)
    written = outputs.write_transcripts(result, Path(job.out_dir), job.stem, job.formats, meta)
    peak = None
    if sampler is not None:  # CTranslate2 allocates outside torch: NVML's figure for it
        peak = sampler.stop()
    elif device.startswith("cuda") and not measure:
        peak = _peak_vram_mb(torch, job.gpu, job.gpu_uuid)
    conn.send(Done(
        outputs=tuple(str(p) for p in written),
        load_seconds=load_seconds,
        transcribe_seconds=transcribe_seconds,
        diarize_seconds=diarize_seconds,
        audio_seconds=audio_seconds,
        detected_language=result.get("language"),
        vram_peak_mb=peak,
        rss_peak_mb=meta["peak_rss_mb"],
        engine=runtime.name,
        precision=engines.precision(opts, device.startswith("cuda")),
        sha256=digest.result(),
    ))
    return key, model


def transcribe(job: Job, model: object, audio: np.ndarray | Iterable[np.ndarray], device: str,
               progress: Callable[[float], None] | None,
               runtime: Engine | None = None) -> tuple[dict, dict]:
    """Per piece: speech regions → (language, once) → prompt → decode the speech → stitch;
    then post-process the whole transcript once.

    `audio` is 16 kHz mono float32: one array, or the blocks of ``audio.stream``. `runtime` is
    the engines.Engine that loaded `model` (default: the job's engine). Returns the result to
    write and what the json output should say about how it was made (with `audio_seconds`,
    the decoded duration).
    """
    from . import engine, engines, options, pieces, postprocess, prompting, vad

    opts = options.Decoding.model_validate(job.decoding)
    runtime = runtime or engines.get(opts.engine)
    # Temperature fallback samples at random: a fixed seed, once per file, gives the same file
    # the same transcript on every attempt and every machine with the same weights.
    runtime.seed()
    vad_options = vad.VadOptions(opts.vad_threshold, opts.vad_min_silence_ms,
                                 opts.vad_speech_pad_ms, opts.vad_min_speech_ms)
    blocks = [audio] if isinstance(audio, np.ndarray) else audio
    language, prompt, warnings = job.language, None, []
    multilingual = runtime.multilingual(model)
    decided = False  # language and prompt are fixed by the first piece with speech
    segments: list[dict] = []
    regions: list = []
    duration = 0.0
    # The VAD finds the pauses to cut at even when the user turned it off for decoding.
    for piece in pieces.split(blocks, job.piece_seconds,
                              lambda samples: vad.speech_regions(samples, vad_options)):
        duration = piece.offset + piece.duration
        regions += piece.file_regions()
        speech = [(r.start, r.end) for r in piece.regions] if opts.vad else None
        if speech == []:
            continue
        if not decided:
            decided = True
            if language is None:
                language, probability = runtime.detect_language(model, piece.samples, speech,
                                                                opts.languages)
                log.info("task %s: language %s (p=%.2f)", job.task_id, language, probability)
            if (warning := engine.language_warning(job.model, multilingual, language)):
                log.warning("task %s: %s", job.task_id, warning)
                warnings.append(warning)
                language = "en"
            # Translating writes English: a Chinese default prompt would pull it back.
            prompt = prompting.build_prompt(language if job.task == "transcribe" else None,
                                            opts.initial_prompt, opts.glossary)
        part = runtime.transcribe(model, piece.samples, language=language, task=job.task,
                                  prompt=prompt, speech=speech, opts=opts,
                                  progress=_within(progress, piece, job.audio_seconds))
        segments += pieces.shift_segments(part["segments"], piece.offset)
        language = language or part.get("language")
    if progress is not None:
        progress(1.0)  # also when the last pieces had no speech to decode
    if not decided:
        warnings.append("No speech was found in this file, so the transcript is empty.")
        if (warning := engine.language_warning(job.model, multilingual, language)):
            warnings.insert(0, warning)
            language = "en"
    result = {"text": "".join(s["text"] for s in segments), "segments": segments,
              "language": language}
    report = postprocess.apply(result, duration=duration, regions=regions if opts.vad else None,
                               prompt=prompt, opencc_config=opts.opencc)
    report.warnings[:0] = warnings
    meta = {
        "audio_seconds": duration,
        "prompt": prompt,
        "vad": opts.vad,
        "speech_regions": [[r.start, r.end] for r in regions] if opts.vad else None,
        **report.as_json(),
    }
    return result, meta


def _within(progress: Callable[[float], None] | None, piece: Piece,
            total: float) -> Callable[[float], None] | None:
    """A piece's progress (0–1) as progress through the whole file."""
    if progress is None:
        return None
    if total <= 0:
        return progress

    def report(fraction: float) -> None:
        progress(min(1.0, (piece.offset + fraction * piece.duration) / total))

    return report


def peak_rss_mb() -> int | None:
    """This process's peak resident memory (what RAM admission learns from)."""
    try:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(kib / 1024) if sys.platform != "darwin" else int(kib / 1024 / 1024)
    except ImportError:  # Windows: the peak working set
        import psutil

        return int(psutil.Process().memory_info().peak_wset / (1024 * 1024))


class _Sha256:
    """The source file's SHA-256, computed in a thread (hashlib releases the GIL on big reads).

    It identifies the audio in the task history after the file has moved to archive/. A file
    that cannot be read again just has no hash; decoding reports the real error.
    """

    def __init__(self, path: Path) -> None:
        self._hex: str | None = None
        self._thread = threading.Thread(target=self._run, args=(path,), daemon=True,
                                        name="sha256")
        self._thread.start()

    def _run(self, path: Path) -> None:
        from . import fsops

        try:
            with open(fsops.open_regular(path), "rb") as f:  # never through a link
                self._hex = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as err:
            log.warning("could not hash %s: %s", path, err)

    def result(self) -> str | None:
        self._thread.join()
        return self._hex


def _vram_sampler(job: Job) -> object:
    """Samples this process's memory on its card from before loading (gpu.PeakSampler)."""
    from . import gpu

    try:
        backend = gpu.NvmlBackend([job.gpu])
    except Exception as err:  # noqa: BLE001 - no NVML: no measurement, the task still runs
        log.warning("cannot measure VRAM (NVML: %s)", err)
        return None
    return gpu.PeakSampler(backend, job.gpu, os.getpid()).start()


DEFAULT_CONTEXT_MB = 500  # CUDA context + cuBLAS workspace when the driver won't tell (WDDM)


def _peak_vram_mb(torch, index: int | None = None,  # noqa: ANN001 - the torch module
                  uuid: str | None = None) -> int:
    """What this process needed on the card: the allocator's peak plus the CUDA context.

    NVML's per-process figure is None on Windows WDDM and uses host PIDs in containers, so the
    context is measured as (NVML's figure for this PID − torch's reserved) where available.
    """
    reserved = torch.cuda.memory_reserved()
    peak = torch.cuda.max_memory_reserved()
    context = DEFAULT_CONTEXT_MB
    try:
        import pynvml

        from .gpu import nvml_handle

        pynvml.nvmlInit()
        # The card the job was pinned to, as NVML names it (torch's index 0 is not NVML's).
        handle = nvml_handle(pynvml, index if index is not None else 0, uuid)
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory:
                context = max(0, (proc.usedGpuMemory - reserved) // (1024 * 1024))
    except Exception:  # noqa: BLE001 - NVML is optional here; keep the default
        pass
    return int(peak // (1024 * 1024) + context)
