"""service.audio on real files made at test time: espeak-ng speech, transcoded with PyAV."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from service import audio
from service.audio import AUDIO_EXTENSIONS, AudioInfo, NotAudioError, decode, probe
from tests.speech import convert, espeak_available, read_wav, silence_wav, speak_wav, tone_wav

pytestmark = pytest.mark.skipif(not espeak_available(), reason="needs espeak-ng")

SENTENCE = "Please transcribe this audio file carefully. The quick brown fox jumps over the dog."

# format → (expected codec name in AudioInfo, duration tolerance in seconds)
FORMATS = {
    ".wav": ("pcm_s16le", 0.001),
    ".flac": ("flac", 0.001),
    ".mp3": ("mp3", 0.08),
    ".ogg": ("vorbis", 0.05),
    ".opus": ("opus", 0.05),
    ".m4a": ("aac", 0.08),
    ".webm": ("opus", 0.05),
    ".wma": ("wmav2", 0.08),
}


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One espeak sentence as WAV plus a transcoded copy per format."""
    folder = tmp_path_factory.mktemp("speech")
    wav = speak_wav(SENTENCE, folder / "speech.wav")
    files = {".wav": wav}
    for ext in FORMATS:
        if ext != ".wav":
            files[ext] = convert(wav, folder / f"speech{ext}")
    return files


@pytest.fixture(scope="module")
def reference(speech: dict[str, Path]) -> tuple[np.ndarray, float]:
    """The WAV's samples resampled to 16 kHz by an independent method (FFT), and its length."""
    samples, rate = read_wav(speech[".wav"])
    n_out = round(len(samples) * 16000 / rate)
    ref = np.fft.irfft(np.fft.rfft(samples)[: n_out // 2 + 1], n_out) * (n_out / len(samples))
    return ref.astype(np.float32), len(samples) / rate


def best_correlation(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[float, int]:
    """Highest normalised cross-correlation within ±max_lag samples (lossy codecs add delay)."""
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    cc = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)
    lags = np.r_[np.arange(0, max_lag + 1), np.arange(-max_lag, 0)]
    values = cc[lags % n]
    i = int(np.argmax(values))
    return float(values[i] / np.sqrt(np.dot(a, a) * np.dot(b, b))), int(lags[i])


# --- extensions -----------------------------------------------------------------------------


def test_audio_extensions_are_lowercase_with_dot() -> None:
    expected = {
        "wav", "mp3", "m4a", "flac", "ogg", "oga", "opus", "webm", "mp4", "m4v", "mkv", "mov",
        "avi", "aac", "wma", "amr", "aiff", "aif", "3gp", "wmv", "mpga", "mpeg",
    }
    assert isinstance(AUDIO_EXTENSIONS, frozenset)
    assert {"." + e for e in expected} == AUDIO_EXTENSIONS
    assert audio.is_audio_name("会议 记录 1.MP3") and not audio.is_audio_name("notes.txt")


# --- good files -----------------------------------------------------------------------------


@pytest.mark.parametrize("ext", list(FORMATS))
def test_probe_reports_duration_codec_and_layout(
    speech: dict[str, Path], reference: tuple[np.ndarray, float], ext: str
) -> None:
    codec, tolerance = FORMATS[ext]
    info = probe(speech[ext])
    assert isinstance(info, AudioInfo)
    assert info.codec == codec
    assert info.duration_s == pytest.approx(reference[1], abs=tolerance)
    assert info.sample_rate in (22050, 48000)  # espeak's rate, or opus's fixed 48 kHz
    assert info.channels == (2 if ext == ".ogg" else 1)  # the test's vorbis encoder is stereo
    assert info.container


@pytest.mark.parametrize("ext", list(FORMATS))
def test_decode_gives_16k_mono_float32_matching_the_wav(
    speech: dict[str, Path], reference: tuple[np.ndarray, float], ext: str
) -> None:
    ref, seconds = reference
    samples = decode(speech[ext])
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - seconds * 16000) <= 0.06 * 16000
    assert np.all(np.isfinite(samples)) and np.max(np.abs(samples)) <= 1.5
    n = min(len(samples), len(ref))
    corr, lag = best_correlation(samples[:n], ref[:n], max_lag=1600)
    assert corr > 0.98, f"{ext}: correlation {corr:.4f} at lag {lag}"
    if ext in (".wav", ".flac"):  # lossless: sample-exact length and alignment
        assert abs(len(samples) - len(ref)) <= 1
        assert lag == 0 and np.corrcoef(samples[:n], ref[:n])[0, 1] > 0.995


def test_decode_resamples_to_other_rates(speech: dict[str, Path]) -> None:
    samples = decode(speech[".flac"], sample_rate=8000)
    assert samples.dtype == np.float32
    assert len(samples) == pytest.approx(probe(speech[".flac"]).duration_s * 8000, abs=2)


def test_decode_passthrough_of_16k_mono_input(tmp_path: Path) -> None:
    # Already in the target layout: the resampler passes frames through untouched.
    wav = tone_wav(tmp_path / "tone.wav", 1.5, freq=440, rate=16000)
    samples = decode(wav)
    expected, _ = read_wav(wav)
    assert len(samples) == len(expected)
    np.testing.assert_allclose(samples, expected, atol=1e-6)


def test_video_with_sound_is_accepted(tmp_path: Path, speech: dict[str, Path]) -> None:
    path = make_video(tmp_path / "clip.mp4", with_audio_from=speech[".wav"])
    info = probe(path)
    assert info.codec == "aac" and info.duration_s > 1.0
    assert len(decode(path)) == pytest.approx(info.duration_s * 16000, rel=0.05)


def test_chinese_names_with_spaces(tmp_path: Path, speech: dict[str, Path]) -> None:
    folder = tmp_path / "会议 资料" / "第 1 组"
    folder.mkdir(parents=True)
    for ext in (".mp3", ".wav", ".m4a"):
        target = folder / f"会议 记录 1{ext}"
        shutil.copyfile(speech[ext], target)
        info = probe(target)
        assert info.duration_s == pytest.approx(probe(speech[ext]).duration_s, abs=1e-6)
        assert len(decode(target)) == len(decode(speech[ext]))
    # and a file PyAV writes itself under a Chinese name
    made = convert(speech[".wav"], folder / "语音 测试.flac")
    assert probe(made).codec == "flac"


def test_long_silence_probes_from_headers_quickly(tmp_path: Path) -> None:
    wav = silence_wav(tmp_path / "silence.wav", 120)
    info = probe(wav)
    assert info.duration_s == pytest.approx(120.0)
    assert info.channels == 1 and info.sample_rate == 16000


# --- bad inputs -----------------------------------------------------------------------------


def expect(path: Path, kind: str, message: str) -> None:
    """Both probe and decode refuse with the same plain message."""
    for fn in (probe, decode):
        with pytest.raises(NotAudioError) as err:
            fn(path)
        assert err.value.kind == kind, fn.__name__
        assert str(err.value) == message, fn.__name__


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp3"
    path.touch()
    expect(path, "empty",
           "The file is empty (0 bytes). If it was still being copied, copy it again.")


def test_text_file_named_wav(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("Minutes of the meeting: nothing to report.\n", encoding="utf-8")
    expect(path, "not_media",
           "This is not an audio or video file (DropScribe cannot read its contents).")


def test_first_300_bytes_of_an_mp3(tmp_path: Path, speech: dict[str, Path]) -> None:
    path = tmp_path / "cut.mp3"
    path.write_bytes(speech[".mp3"].read_bytes()[:300])
    expect(path, "damaged",
           "The file is damaged or truncated: it starts like MP3/AAC audio, but cannot be read.")


def test_half_an_mp3_probes_with_the_duration_it_really_has(
    tmp_path: Path, speech: dict[str, Path]
) -> None:
    data = speech[".mp3"].read_bytes()
    path = tmp_path / "half.mp3"
    path.write_bytes(data[: len(data) // 2])
    full = probe(speech[".mp3"]).duration_s
    info = probe(path)  # its LAME/Xing header still promises the full length
    assert 0.35 * full < info.duration_s < 0.65 * full
    samples = decode(path)
    assert len(samples) / 16000 == pytest.approx(info.duration_s, abs=0.1)


def test_truncated_flac_decodes_what_precedes_the_damage(
    tmp_path: Path, speech: dict[str, Path]
) -> None:
    data = speech[".flac"].read_bytes()
    path = tmp_path / "cut.flac"
    path.write_bytes(data[: len(data) * 2 // 5])
    info = probe(path)
    assert 0.5 < info.duration_s < 0.6 * probe(speech[".flac"]).duration_s
    assert 0 < len(decode(path)) <= info.duration_s * 16000 + 1


def test_headers_without_any_audio_data(tmp_path: Path, speech: dict[str, Path]) -> None:
    data = speech[".flac"].read_bytes()
    path = tmp_path / "headers-only.flac"
    path.write_bytes(data[: data.index(b"\xff\xf8")])  # up to the first FLAC frame
    with pytest.raises(NotAudioError) as err:
        probe(path)
    assert err.value.kind == "damaged"
    assert str(err.value).startswith("The file is damaged or truncated: ")


def test_wav_with_zero_samples(tmp_path: Path) -> None:
    path = silence_wav(tmp_path / "nothing.wav", 0)
    expect(path, "empty", "The file contains no audio data (0 seconds).")


def test_directory_named_like_audio(tmp_path: Path) -> None:
    path = tmp_path / "x.mp3"
    path.mkdir()
    expect(path, "directory", "This is a folder, not an audio file.")


def test_missing_file(tmp_path: Path) -> None:
    expect(tmp_path / "gone.mp3", "missing",
           "The file is no longer there (it was moved or deleted before it could be read).")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX only")
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "pipe.mp3"
    os.mkfifo(path)
    expect(path, "not_file", "This is not a regular file (it may be a device or a pipe).")


def make_video(path: Path, with_audio_from: Path | None = None, frames: int = 10) -> Path:
    """A small H.264 (or MPEG-4 part 2) MP4, optionally with an AAC track from a WAV."""
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        sound = None
        if with_audio_from is not None:
            sound = out.add_stream("aac", rate=22050, layout="mono")
        for i in range(frames):
            image = np.full((48, 64, 3), i * 20, dtype=np.uint8)
            out.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(video.encode(None))
        if sound is not None and with_audio_from is not None:
            resampler = av.AudioResampler(format="fltp", layout="mono", rate=22050, frame_size=1024)
            with av.open(str(with_audio_from)) as src:
                for frame in src.decode(audio=0):
                    frame.pts = None
                    for chunk in resampler.resample(frame):
                        out.mux(sound.encode(chunk))
            for chunk in resampler.resample(None):
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))
    return path


def test_video_only_file(tmp_path: Path) -> None:
    path = make_video(tmp_path / "screen.mp4")
    with av.open(str(path)) as c:  # the fixture really is a video without sound
        assert len(c.streams.video) == 1 and not c.streams.audio
    expect(path, "no_audio", "This file has no audio stream (it looks like a video-only file).")


PERMISSION_MESSAGE = (
    "The file cannot be read: permission denied. Check the file's permissions; on Windows, "
    "close any program that still has it open."
)


def test_unreadable_file(tmp_path: Path, speech: dict[str, Path]) -> None:
    path = tmp_path / "locked.wav"
    shutil.copyfile(speech[".wav"], path)
    path.chmod(0)
    try:
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # root reads a mode-000 file anyway (true here): then it must simply probe fine,
            # and the PermissionError → message mapping is checked directly below.
            assert os.access(path, os.R_OK)
            assert probe(path).duration_s > 1.0
        else:
            expect(path, "permission", PERMISSION_MESSAGE)
    finally:
        path.chmod(0o644)


def test_permission_errors_map_to_the_permission_message(tmp_path: Path) -> None:
    path = tmp_path / "x.mp3"
    for exc in (
        PermissionError(errno.EACCES, "Permission denied", str(path)),  # Python's open()
        av.error.PermissionError(errno.EACCES, "Permission denied", str(path)),  # av.open()
    ):
        err = audio._translate_error(exc, path)
        assert (err.kind, str(err)) == ("permission", PERMISSION_MESSAGE)
    # FFmpeg's EPERM means "operation not possible" (e.g. seeking), not a file permission.
    err = audio._translate_error(av.error.PermissionError(errno.EPERM, "Operation not permitted"),
                                 path)
    assert err.kind == "damaged"


def test_precheck_reports_permission_from_python_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a non-root user (or a Windows sharing violation) produces, without needing either.
    path = tmp_path / "x.wav"
    path.write_bytes(b"RIFF0000WAVE")

    def denied(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(audio, "open", denied, raising=False)
    expect(path, "permission", PERMISSION_MESSAGE)


def test_no_raw_pyav_exception_escapes_for_garbage(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    for i, ext in enumerate((".mp3", ".wav", ".m4a", ".ogg", ".aac", ".mkv", ".amr")):
        path = tmp_path / f"garbage{i}{ext}"
        path.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        for fn in (probe, decode):
            try:
                fn(path)
            except NotAudioError as err:
                assert err.kind in {"not_media", "damaged", "empty", "no_audio"}


@pytest.mark.parametrize("ext", [".mp3", ".m4a", ".ogg", ".flac", ".webm", ".wma"])
def test_damage_in_the_middle_never_escapes_as_a_raw_error(
    tmp_path: Path, speech: dict[str, Path], ext: str
) -> None:
    data = bytearray(speech[ext].read_bytes())
    middle = len(data) // 3
    data[middle : middle + 2000] = np.random.default_rng(3).bytes(2000)
    path = tmp_path / f"damaged{ext}"
    path.write_bytes(bytes(data))
    try:
        info = probe(path)
        samples = decode(path)
    except NotAudioError as err:  # acceptable, as long as it is ours
        assert err.kind == "damaged"
        return
    assert info.duration_s > 1.0
    assert 16000 <= len(samples) <= (info.duration_s + 0.5) * 16000


@pytest.mark.parametrize("ext", [".mp3", ".m4a"])
def test_decoded_audio_is_what_whisper_expects(
    tmp_path: Path, tiny_en_model: object, ext: str
) -> None:
    """The real check of decode(): tiny.en transcribes PyAV-decoded speech word for word.

    whisper.audio.load_audio needs an ffmpeg executable, which neither this machine nor the
    users have, so equivalence is checked by what it is for rather than sample by sample.
    """
    import whisper

    from tests.fixtures_models import SENTENCE as SHORT
    from tests.speech import word_error_rate

    source = convert(speak_wav(SHORT, tmp_path / "s.wav"), tmp_path / f"会议 记录{ext}")
    result = whisper.transcribe(tiny_en_model, decode(source), language="en", fp16=False,
                                temperature=0.0, condition_on_previous_text=False)
    assert word_error_rate(SHORT, result["text"]) == 0.0, result["text"]


# --- the test helpers themselves (tests/speech.py) ------------------------------------------


def test_word_error_rate_normalises_case_and_punctuation() -> None:
    from tests.speech import word_error_rate

    assert word_error_rate("Please transcribe this.", "please, TRANSCRIBE this") == 0.0
    assert word_error_rate("a b c d", "a x c") == pytest.approx(0.5)  # 1 sub + 1 deletion
    assert word_error_rate("a b", "a b c d") == pytest.approx(1.0)  # 2 insertions
    assert word_error_rate("", "") == 0.0


def test_wait_for_returns_the_value_or_fails_with_a_message() -> None:
    from tests.speech import wait_for

    calls = iter([0, None, "done"])
    assert wait_for(lambda: next(calls), timeout=2, interval=0.01) == "done"
    with pytest.raises(AssertionError, match="not met within 0.1s"):
        wait_for(lambda: False, timeout=0.1, interval=0.02)
