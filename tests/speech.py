"""Test helpers that make real audio at test time (espeak-ng, PyAV, wave) — nothing committed.

Plain functions, not a test module: many test files import them. Everything here uses PyAV or
espeak-ng only, never an ffmpeg executable, because the product must not need one either.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import time
import wave
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import av
import numpy as np

log = logging.getLogger(__name__)

T = TypeVar("T")

ESPEAK = "espeak-ng"

# extension → (container format, audio encoder, encoder sample rate or None = keep, channels).
# Chosen from what the installed PyAV wheel has (see ``av.codecs_available``): libmp3lame, flac,
# libopus, native vorbis (experimental, stereo only), native aac, wmav2, pcm_s16le, alac.
_TARGETS: dict[str, tuple[str, str, int | None, int]] = {
    ".wav": ("wav", "pcm_s16le", None, 1),
    ".mp3": ("mp3", "libmp3lame", None, 1),
    ".flac": ("flac", "flac", None, 1),
    ".ogg": ("ogg", "vorbis", None, 2),
    ".oga": ("ogg", "vorbis", None, 2),
    ".opus": ("ogg", "libopus", 48000, 1),
    ".webm": ("webm", "libopus", 48000, 1),
    ".mka": ("matroska", "libopus", 48000, 1),
    ".m4a": ("ipod", "aac", None, 1),
    ".aac": ("adts", "aac", None, 1),
    ".mp4": ("mp4", "aac", None, 1),
    ".wma": ("asf", "wmav2", None, 1),
}


def espeak_available() -> bool:
    """True when the espeak-ng executable is on PATH (tests that need speech skip otherwise)."""
    return shutil.which(ESPEAK) is not None


def speak_wav(text: str, path: Path, voice: str = "en-us", speed: int = 150,
              pitch: int | None = None) -> Path:
    """Speak ``text`` into a WAV file with espeak-ng (argument list, never a shell).
    ``pitch`` (0-99, espeak's default 50) and a voice variant (``en-us+f3``) make distinct
    speakers for the diarization tests."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = [] if pitch is None else ["-p", str(pitch)]
    subprocess.run(
        [ESPEAK, "-v", voice, "-s", str(speed), *extra, "-w", str(path), "--", text],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path


def convert(src_wav: Path, dest: Path) -> Path:
    """Transcode ``src_wav`` with PyAV into the container implied by ``dest``'s extension."""
    src_wav, dest = Path(src_wav), Path(dest)
    try:
        fmt, codec, rate, channels = _TARGETS[dest.suffix.lower()]
    except KeyError:
        raise ValueError(f"convert(): no encoder set up for {dest.suffix!r}") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src_wav)) as src, av.open(str(dest), "w", format=fmt) as out:
        in_stream = src.streams.audio[0]
        out_rate = rate or in_stream.codec_context.sample_rate
        layout = "mono" if channels == 1 else "stereo"
        stream = out.add_stream(codec, rate=out_rate, layout=layout)
        ctx = stream.codec_context
        if codec == "vorbis":
            ctx.options = {"strict": "experimental"}
        if codec == "wmav2":
            ctx.bit_rate = 64000  # it will not open without one
        fmt_name = ctx.codec.audio_formats[0].name if ctx.codec.audio_formats else "s16"
        ctx.format = fmt_name
        ctx.open(strict=False)  # the frame size is only known once the encoder is open
        frame_size = ctx.frame_size or None
        resampler = av.AudioResampler(
            format=fmt_name, layout=layout, rate=out_rate, frame_size=frame_size
        )
        pts = 0

        def _encode(frames: list[av.AudioFrame]) -> None:
            nonlocal pts
            for frame in frames:
                frame.pts = pts
                frame.time_base = Fraction(1, out_rate)
                pts += frame.samples
                out.mux(stream.encode(frame))

        for frame in src.decode(in_stream):
            frame.pts = None
            _encode(resampler.resample(frame))
        _encode(resampler.resample(None))
        out.mux(stream.encode(None))
    return dest


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def tone_wav(path: Path, seconds: float, freq: float = 440, rate: int = 16000) -> Path:
    """A mono 16-bit sine tone: cheap non-speech audio for volume tests with many files."""
    t = np.arange(int(round(seconds * rate))) / rate
    return write_wav(path, 0.5 * np.sin(2 * np.pi * freq * t), rate)


def talk_wav(path: Path, seconds: float,
             sentence: str = "We are still talking about the budget.") -> Path:
    """``seconds`` of continuous espeak-ng speech: real work for a model. (A tone or silence is
    no speech, so voice activity detection skips it and the task ends at once.)"""
    one = speak_wav(sentence, Path(path).with_name(f".{Path(path).stem}.one.wav"))
    speech, rate = read_wav(one)
    one.unlink()
    return write_wav(path, np.tile(speech, int(seconds * rate / len(speech)) + 1), rate)


def silence_wav(path: Path, seconds: float, rate: int = 16000) -> Path:
    """A mono 16-bit file of digital silence."""
    return write_wav(path, np.zeros(int(round(seconds * rate))), rate)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM WAV as mono float32 in [-1, 1) and its rate (reference for tests)."""
    with wave.open(str(path), "rb") as w:
        rate, channels = w.getframerate(), w.getnchannels()
        assert w.getsampwidth() == 2, "read_wav handles 16-bit PCM only"
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    data = data.reshape(-1, channels).mean(axis=1) if channels > 1 else data
    return (data.astype(np.float32) / 32768.0), rate


_PUNCT = re.compile(r"[^\w\s']+")


def _words(text: str) -> list[str]:
    return _PUNCT.sub(" ", text.lower()).replace("'", "").split()


def _error_rate(ref: list[str], hyp: list[str]) -> float:
    """Levenshtein distance between token lists / number of reference tokens."""
    if not ref:
        return 0.0 if not hyp else 1.0
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance / number of reference words (lowercase, no punctuation)."""
    return _error_rate(_words(reference), _words(hypothesis))


def _chars(text: str) -> list[str]:
    return [ch for ch in text.lower() if ch.isalnum()]


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Character-level error rate (Chinese has no spaces): letters and digits only."""
    return _error_rate(_chars(reference), _chars(hypothesis))


# --- Mandarin and whole meetings -------------------------------------------------------------

MANDARIN_VOICE = "cmn-latn-pinyin"  # reads tone-numbered pinyin; "cmn" reads Latin as English


def to_pinyin(text: str) -> str:
    """Tone-numbered pinyin (``jin1 tian1 …``) for espeak-ng's Mandarin voice (pypinyin)."""
    from pypinyin import Style, lazy_pinyin

    return " ".join(lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True))


def speak_mandarin(text: str, path: Path, speed: int = 140, variant: str = "",
                   pitch: int | None = None) -> Path:
    """Mandarin speech for Chinese text. Robotic: it shows behaviour, not accuracy (the
    multilingual base model gets roughly half the characters right). ``variant`` is an
    espeak-ng voice variant such as ``+f3`` (another speaker)."""
    return speak_wav(to_pinyin(text), path, voice=MANDARIN_VOICE + variant, speed=speed,
                     pitch=pitch)


def resample(x: np.ndarray, rate: int, target: int = 16000) -> np.ndarray:
    """Band-limited resampling by truncating the spectrum (fine for short test clips)."""
    if rate == target:
        return x
    n_out = round(len(x) * target / rate)
    spectrum = np.fft.rfft(x)[: n_out // 2 + 1]
    return (np.fft.irfft(spectrum, n_out) * (n_out / len(x))).astype(np.float32)


def speech_16k(wav: Path) -> np.ndarray:
    samples, rate = read_wav(wav)
    return resample(samples, rate, 16000)


def compose(pieces: list[np.ndarray | float], path: Path,
            rate: int = 16000) -> tuple[Path, list[tuple[float, float]]]:
    """One WAV from speech (16 kHz arrays) and silences (seconds); returns it and the
    (start, end) seconds of every speech piece, in order."""
    parts, spans, t = [], [], 0.0
    for piece in pieces:
        if isinstance(piece, int | float):
            parts.append(np.zeros(int(round(piece * rate)), np.float32))
            t += piece
        else:
            parts.append(piece)
            spans.append((t, t + len(piece) / rate))
            t += len(piece) / rate
    return write_wav(path, np.concatenate(parts), rate), spans


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.2) -> T:
    """Poll ``predicate`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            name = getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(
                f"condition {name} not met within {timeout:.1f}s (last value: {value!r})"
            )
        time.sleep(interval)
