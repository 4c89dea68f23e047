"""Probe and decode audio with PyAV — the product never needs an ffmpeg executable.

``probe`` answers "is this audio, and how long is it?" cheaply when a file is enqueued;
``stream`` turns it into what Whisper wants (mono float32 at 16 kHz) inside the worker, block
by block (``decode``: the same, as one array).
Every failure a user can cause (empty file, a text file named .wav, a video without sound, a
truncated download, a folder named x.mp3, no permission) becomes a ``NotAudioError`` whose
message is written for that user, never a raw PyAV exception.

Paths are passed to PyAV as ``str``. Chinese (any non-ASCII) names work on both platforms:
on Linux the name is passed through as UTF-8 bytes, and on Windows FFmpeg's file protocol
converts the UTF-8 string it receives from PyAV to UTF-16 and opens it with ``_wopen``, so
``inbox/会议 记录/会议 记录 1.mp3`` needs no special handling.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
import numpy as np

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    "." + ext
    for ext in (
        "wav mp3 m4a flac ogg oga opus webm mp4 m4v mkv mov avi aac wma amr aiff aif "
        "3gp wmv mpga mpeg"
    ).split()
)

WHISPER_SAMPLE_RATE = 16000

# A metadata duration is trusted when the data really ends within this much of it.
_DURATION_TOLERANCE_S = 0.5
_DURATION_TOLERANCE_REL = 0.02
# How far before the claimed end the cheap end-of-data check seeks.
_TAIL_SECONDS = 2.0
_SNIFF_BYTES = 64
# Tags that are not valid UTF-8 (GBK in ID3, common in Chinese recordings) must not make a
# playable file unreadable: PyAV would raise UnicodeDecodeError while reading the metadata.
METADATA_ERRORS = "replace"


@dataclass(frozen=True)
class AudioInfo:
    """What the queue needs to know about a source file before transcribing it."""

    duration_s: float
    codec: str  # e.g. "mp3", "aac", "pcm_s16le"
    sample_rate: int
    channels: int
    container: str  # FFmpeg's demuxer name, e.g. "mp3", "mov,mp4,m4a,3gp,3g2,mj2"


class NotAudioError(Exception):
    """The file cannot be transcribed; ``str(err)`` is a plain sentence for the user.

    ``kind`` is a short machine-readable reason for the tasks table: ``empty``, ``directory``,
    ``not_file``, ``missing``, ``permission``, ``not_media``, ``damaged``, ``no_audio`` or
    ``unreadable``. ``missing`` and ``permission`` may be temporary (on Windows a file that is
    still open in another program cannot be read), so a caller may choose to retry those.
    """

    def __init__(self, message: str, kind: str = "unreadable") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind


# --- plain-language messages (tests and docs quote these) -----------------------------------

MSG_EMPTY = "The file is empty (0 bytes). If it was still being copied, copy it again."
MSG_DIRECTORY = "This is a folder, not an audio file."
MSG_NOT_FILE = "This is not a regular file (it may be a device or a pipe)."
MSG_MISSING = "The file is no longer there (it was moved or deleted before it could be read)."
MSG_PERMISSION = (
    "The file cannot be read: permission denied. Check the file's permissions; on Windows, "
    "close any program that still has it open."
)
MSG_NOT_MEDIA = "This is not an audio or video file (DropScribe cannot read its contents)."
MSG_NO_AUDIO_VIDEO = "This file has no audio stream (it looks like a video-only file)."
MSG_NO_AUDIO = "This file has no audio stream."
MSG_NO_AUDIO_DATA = "The file contains no audio data (0 seconds)."
MSG_DAMAGED_PREFIX = "The file is damaged or truncated: "


def _damaged(detail: str) -> NotAudioError:
    return NotAudioError(MSG_DAMAGED_PREFIX + detail, "damaged")


# --- recognising what a file claims to be ---------------------------------------------------


def _sniff(head: bytes) -> str | None:
    """Name the media format a file's first bytes announce, or None.

    Used only to word the error when FFmpeg rejects a file: a file that starts like an MP3
    but cannot be opened is damaged or truncated; one that starts like nothing we know is
    simply not a media file (a text file renamed to .wav).
    """
    if head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "MP3/AAC audio"
    if head[:4] in (b"RIFF", b"RIFX", b"RF64"):
        return "AVI video" if head[8:12] == b"AVI " else "WAV audio"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "an MP4/M4A/MOV file"
    simple = {
        b"fLaC": "FLAC audio",
        b"OggS": "an Ogg file",
        b"\x1aE\xdf\xa3": "a Matroska/WebM file",
        b"0&\xb2u": "a Windows Media file",
        b"FORM": "AIFF audio",
        b"#!AM": "AMR audio",
        b".snd": "AU audio",
        b"caff": "a CAF file",
        b"\x00\x00\x01\xba": "an MPEG file",
        b"\x00\x00\x01\xb3": "an MPEG file",
    }
    return simple.get(head[:4])


def _translate_error(exc: BaseException, path: Path, head: bytes = b"") -> NotAudioError:
    """Map an OS or PyAV exception to the plain message a user should read.

    PyAV's exceptions subclass the built-in ones (``av.error.PermissionError`` is a
    ``PermissionError``, ``InvalidDataError`` a ``ValueError``…), so OS-level checks come first.
    """
    if isinstance(exc, NotAudioError):
        return exc
    if isinstance(exc, av.error.FFmpegError) and isinstance(exc, PermissionError):
        if exc.errno != errno.EACCES:  # FFmpeg says EPERM for "cannot seek/do that", not access
            return _damaged(f"{exc.strerror or exc}.")
    if isinstance(exc, IsADirectoryError):
        return NotAudioError(MSG_DIRECTORY, "directory")
    if isinstance(exc, PermissionError):
        return NotAudioError(MSG_PERMISSION, "permission")
    if isinstance(exc, FileNotFoundError):
        return NotAudioError(MSG_MISSING, "missing")
    if isinstance(exc, (av.error.InvalidDataError, av.error.EOFError, EOFError)):
        claimed = _sniff(head)
        if claimed is None:
            return NotAudioError(MSG_NOT_MEDIA, "not_media")
        return _damaged(f"it starts like {claimed}, but cannot be read.")
    if isinstance(exc, av.error.FFmpegError):
        return _damaged(f"{getattr(exc, 'strerror', None) or exc}.")
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        return NotAudioError(f"The file could not be read: {reason}.", "unreadable")
    return NotAudioError(f"The file could not be read: {exc}.", "unreadable")


def _precheck(path: Path) -> bytes:
    """Cheap checks before FFmpeg sees the file; returns its first bytes for error wording.

    Done in Python because it gives exact reasons (and, on Windows, opening a folder or a
    locked file fails with errors FFmpeg would only describe vaguely). Refusing non-regular
    files also means a FIFO can never make ``av.open`` block forever.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _translate_error(exc, path) from exc
    if stat.S_ISDIR(st.st_mode):
        raise NotAudioError(MSG_DIRECTORY, "directory")
    if not stat.S_ISREG(st.st_mode):
        raise NotAudioError(MSG_NOT_FILE, "not_file")
    if st.st_size == 0:
        raise NotAudioError(MSG_EMPTY, "empty")
    try:
        with open(path, "rb") as fh:
            return fh.read(_SNIFF_BYTES)
    except OSError as exc:
        raise _translate_error(exc, path) from exc


@contextmanager
def _open_audio(path: Path) -> Iterator[tuple[av.container.InputContainer, av.AudioStream, bytes]]:
    """Open ``path`` and yield (container, first audio stream, first bytes), or raise."""
    path = Path(path)
    head = _precheck(path)
    try:
        container = av.open(str(path), mode="r", metadata_errors=METADATA_ERRORS)
    except (av.error.FFmpegError, OSError, EOFError) as exc:
        raise _translate_error(exc, path, head) from exc
    try:
        if not container.streams.audio:
            has_video = bool(container.streams.video)
            raise NotAudioError(MSG_NO_AUDIO_VIDEO if has_video else MSG_NO_AUDIO, "no_audio")
        yield container, container.streams.audio[0], head
    finally:
        container.close()


# --- probe ----------------------------------------------------------------------------------


def _seconds(value: int | None, time_base: object) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def _metadata_duration(
    container: av.container.InputContainer, stream: av.AudioStream
) -> float | None:
    """Duration from the headers (stream first, then container), or None when absent."""
    seconds = _seconds(stream.duration, stream.time_base)
    if seconds is None or seconds <= 0:
        seconds = container.duration / av.time_base if container.duration else None
    return seconds if seconds and seconds > 0 and math.isfinite(seconds) else None


def _packet_end(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    """Demux (without decoding) from the current position; the end time of the last packet."""
    end: float | None = None
    try:
        for packet in container.demux(stream):
            if packet.pts is None or packet.time_base is None:
                continue
            stop = float((packet.pts + (packet.duration or 0)) * packet.time_base)
            end = stop if end is None else max(end, stop)
    except (av.error.FFmpegError, EOFError) as exc:
        # A truncated file ends in a broken packet; what was read up to there still counts.
        log.debug("demux stopped early: %s", exc)
    return end


def _decoded_seconds(container: av.container.InputContainer, stream: av.AudioStream) -> float:
    """Last resort when packets carry no timestamps: decode and count samples."""
    samples = 0
    rate = stream.codec_context.sample_rate or 0
    try:
        for packet in container.demux(stream):
            try:
                for frame in stream.decode(packet):
                    samples += frame.samples
                    rate = frame.sample_rate or rate
            except (av.error.FFmpegError, EOFError):
                continue
    except (av.error.FFmpegError, EOFError) as exc:
        log.debug("demux stopped early while counting samples: %s", exc)
    return samples / rate if rate else 0.0


def _data_duration(
    path: Path,
    container: av.container.InputContainer,
    stream: av.AudioStream,
    claimed: float | None,
) -> float:
    """Where the audio data really ends, measured from the stream start (0.0: no data).

    With a claimed duration we seek to just before its end and demux the few packets left —
    milliseconds even for hours of audio, and it catches truncated files whose headers still
    promise the full length (a half-copied MP3 with a Xing header claims its original
    duration). Without one, or when the seek fails or finds nothing, we demux from the start
    in a freshly opened container (some demuxers cannot seek back at all).
    """
    start = _seconds(stream.start_time, stream.time_base) or 0.0
    if claimed is not None and stream.time_base:
        target = start + max(0.0, claimed - _TAIL_SECONDS)
        try:
            container.seek(int(target / stream.time_base), stream=stream, backward=True)
            end = _packet_end(container, stream)
        except (av.error.FFmpegError, EOFError, OverflowError) as exc:
            log.debug("%s: seek to %.1fs failed: %s", path.name, target, exc)
            end = None
        if end is not None:
            return max(0.0, end - start)
    with av.open(str(path), metadata_errors=METADATA_ERRORS) as fresh:
        end = _packet_end(fresh, fresh.streams.audio[0])
    if end is not None:
        return max(0.0, end - start)
    with av.open(str(path), metadata_errors=METADATA_ERRORS) as fresh:  # no timestamps: count
        return _decoded_seconds(fresh, fresh.streams.audio[0])


def probe(path: Path) -> AudioInfo:
    """Is ``path`` audio we can transcribe, and how long is it? Raises ``NotAudioError``.

    Reads the headers, then checks cheaply (one seek near the end) that the data really
    reaches the duration they claim; a truncated file probes with the duration it really has.
    """
    path = Path(path)
    try:
        with _open_audio(path) as (container, stream, _head):
            cc = stream.codec_context
            claimed = _metadata_duration(container, stream)
            measured = _data_duration(path, container, stream, claimed)
            if measured <= 0.0:
                if claimed is None:
                    raise NotAudioError(MSG_NO_AUDIO_DATA, "empty")
                raise _damaged("the headers promise audio, but there is no audio data.")
            if claimed is None:
                duration = measured
            elif abs(measured - claimed) <= max(
                _DURATION_TOLERANCE_S, claimed * _DURATION_TOLERANCE_REL
            ):
                duration = claimed
            else:
                log.warning(
                    "%s: headers claim %.2fs but the audio data lasts %.2fs; using %.2fs",
                    path.name, claimed, measured, measured,
                )
                duration = measured
            return AudioInfo(
                duration_s=float(duration),
                codec=cc.codec.canonical_name or cc.name,
                sample_rate=int(cc.sample_rate or 0),
                channels=int(cc.layout.nb_channels if cc.layout else cc.channels),
                container=container.format.name,
            )
    except NotAudioError:
        raise
    except (av.error.FFmpegError, OSError, EOFError) as exc:
        raise _translate_error(exc, path) from exc


# --- decode ---------------------------------------------------------------------------------


def stream(path: Path, sample_rate: int = WHISPER_SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Decode the first audio stream to mono float32 at ``sample_rate``, block by block.

    The blocks come as FFmpeg decodes them, so memory is that of one block whatever the
    length (``pieces`` takes a long file a few minutes at a time). Matches
    ``whisper.audio.load_audio`` (ffmpeg ``-ac 1 -ar 16000``, same libswresample) without its
    int16 round trip. Like the ffmpeg CLI, a packet that fails to decode is skipped with a
    warning, so a file damaged near the end still yields what precedes the damage; only a file
    with no decodable audio at all raises ``NotAudioError``.
    """
    path = Path(path)
    yielded = False
    bad_packets = 0
    try:
        with _open_audio(path) as (container, audio_stream, _head):
            resampler: av.AudioResampler | None = None
            source_key: tuple[str, str, int] | None = None

            def packets() -> Iterator[av.Packet | None]:
                try:
                    yield from container.demux(audio_stream)  # ends with an empty flush packet
                except (av.error.FFmpegError, EOFError) as exc:
                    if not yielded:
                        raise
                    log.warning("%s: reading stopped early (%s); keeping what was decoded",
                                path.name, exc)
                    yield None  # flush the decoder ourselves: demux never reached the end

            for packet in packets():
                try:
                    frames = audio_stream.decode(packet)
                except (av.error.FFmpegError, EOFError) as exc:
                    bad_packets += 1
                    log.debug("%s: skipping a packet that does not decode: %s", path.name, exc)
                    continue
                for frame in frames:
                    key = (frame.format.name, frame.layout.name, frame.sample_rate)
                    outs: list[av.AudioFrame] = []
                    if key != source_key:
                        # A stream may change rate/layout mid-way (some MP3/AAC files do);
                        # ffmpeg reconfigures its filter, we start a fresh resampler.
                        if resampler is not None:
                            outs += resampler.resample(None)
                        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
                        source_key = key
                    outs += resampler.resample(frame)
                    for block in _blocks(outs):
                        yielded = True
                        yield block
            if resampler is not None:
                for block in _blocks(resampler.resample(None)):  # the resampler holds a tail
                    yielded = True
                    yield block
    except NotAudioError:
        raise
    except (av.error.FFmpegError, OSError, EOFError) as exc:
        raise _translate_error(exc, path) from exc

    if bad_packets:
        log.warning("%s: %d damaged packet(s) skipped while decoding", path.name, bad_packets)
    if not yielded:
        if bad_packets:
            raise _damaged("no audio could be decoded from it.")
        raise NotAudioError(MSG_NO_AUDIO_DATA, "empty")


def _blocks(frames: list[av.AudioFrame]) -> Iterator[np.ndarray]:
    for out in frames:
        block = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
        if len(block):
            yield block


def decode(path: Path, sample_rate: int = WHISPER_SAMPLE_RATE) -> np.ndarray:
    """The whole file as one array (see ``stream``; fine for short files and tests)."""
    blocks = list(stream(path, sample_rate))
    return np.concatenate(blocks) if len(blocks) > 1 else blocks[0].copy()


def is_audio_name(name: str | os.PathLike[str]) -> bool:
    """True when the file name has one of the extensions the watcher accepts."""
    return os.path.splitext(os.fspath(name))[1].lower() in AUDIO_EXTENSIONS


__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioInfo",
    "NotAudioError",
    "decode",
    "is_audio_name",
    "probe",
    "stream",
]
