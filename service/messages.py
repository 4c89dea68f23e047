"""What the dispatcher and a worker process say to each other over their pipe, in one place.

Each message is a small frozen dataclass instead of a positional tuple, so a field is named
where it is read and a misspelt one fails at once. They travel pickled through a
multiprocessing pipe: module-level classes of plain fields, importable by a spawned or
forkserver child, with nothing but the standard library imported here (a worker whose torch is
broken must still be able to say so).

Parent → worker: a `Job` (one file), then another `Job` to a warm worker, or `Stop`.
Worker → parent, in the order a worker sends them:
  Ready         imports done; a pre-started worker now waits for its job
  StartupError  the imports failed instead (a broken torch install): why, in words
  Loaded        model loaded: the task moves to processing
  Progress      at most every `progress_seconds`
  Done          outputs written: timings, language, memory peaks, the source's hash
  Error         the job failed: its kind, a plain message, whether a retry could help
  Log           any time: one of the worker's own log records, for the service log
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Job:
    """One file for a worker: everything it needs, so it never reads the database."""

    task_id: int
    source_path: str  # absolute path of the audio file in the inbox
    source_name: str  # inbox-relative name, for the json metadata
    model: str
    models_dir: str
    allow_download: bool
    out_dir: str
    stem: str
    formats: tuple[str, ...]
    language: str | None = None
    task: str = "transcribe"
    # options.Decoding as JSON data (settings merged with the sidecar); {} = the defaults
    decoding: dict = field(default_factory=dict)
    gpu: int | None = None  # NVML index of the card (gpu.cuda_env pins it); None → CPU
    gpu_uuid: str | None = None  # its NVML UUID: what CUDA_VISIBLE_DEVICES names
    threads: int = 0
    progress_seconds: float = 2.0
    keep_warm_seconds: float = 0.0
    inbox: str = ""  # the folders the source and out_dir must stay inside (checked again at
    outbox: str = ""  # the moment of reading and writing: a folder can become a link meanwhile)
    piece_seconds: float = 600.0  # long files are decoded and transcribed this much at a time
    audio_seconds: float = 0.0  # the probed duration (progress across pieces); 0 = unknown
    ui_language: str = "en"  # speaker labels: "Speaker 1" / "说话人1"


@dataclass(frozen=True)
class Stop:
    """Leave now: a spare at shutdown, or a warm worker whose next task could not start."""


@dataclass(frozen=True)
class Ready:
    """The worker's imports are done: it can take a job (and a start is no longer failing)."""


@dataclass(frozen=True)
class StartupError:
    """The worker could not import torch/whisper; it exits after sending this."""

    reason: str  # worker.startup_message: plain words plus the library's own


@dataclass(frozen=True)
class Loaded:
    load_seconds: float  # ~0 when a warm worker already held the model


@dataclass(frozen=True)
class Progress:
    fraction: float  # 0–1 through the whole file


@dataclass(frozen=True)
class Done:
    """The transcripts are on disk; what the task row and the estimates learn from."""

    outputs: tuple[str, ...]
    load_seconds: float
    transcribe_seconds: float
    audio_seconds: float
    detected_language: str | None
    vram_peak_mb: int | None  # None on the CPU or where it could not be measured
    rss_peak_mb: int | None
    engine: str
    precision: str
    sha256: str | None  # None when the file could not be read a second time
    diarize_seconds: float | None = None  # None: no speaker labels were asked for


@dataclass(frozen=True)
class Error:
    """The job failed (worker.classify); the worker exits after sending this."""

    kind: str  # the task row's error_kind, e.g. "not_audio", "out_of_memory"
    message: str  # plain English; i18n gives the Chinese by kind
    retryable: bool
    resource: bool  # not the file's fault (memory): retried without spending an attempt


@dataclass(frozen=True)
class Log:
    """One worker log record: a service's worker has no console anyone reads."""

    level: int
    logger: str
    text: str


ToWorker = Job | Stop
FromWorker = Ready | StartupError | Loaded | Progress | Done | Error | Log
