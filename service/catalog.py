"""What we know about openai-whisper models without importing torch or whisper.

The parent process uses this to validate model names (subfolders, sidecars) and to seed VRAM
estimates; importing whisper there would cost ~300 MB and 1.5 s for nothing.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

# The engines, named once: settings, sidecars, task rows and calibration keys use these strings.
OPENAI = "openai-whisper"
FASTER = "faster-whisper"
ENGINES = (OPENAI, FASTER)

# name → (parameters in millions, VRAM in MiB from openai-whisper's README table)
OFFICIAL: dict[str, tuple[int, int]] = {
    "tiny.en": (39, 1024),
    "tiny": (39, 1024),
    "base.en": (74, 1024),
    "base": (74, 1024),
    "small.en": (244, 2048),
    "small": (244, 2048),
    "medium.en": (769, 5120),
    "medium": (769, 5120),
    "large-v1": (1550, 10240),
    "large-v2": (1550, 10240),
    "large-v3": (1550, 10240),
    "large": (1550, 10240),
    "large-v3-turbo": (809, 6144),
    "turbo": (809, 6144),
}


LANGUAGE_ALIASES = {"mandarin": "zh", "zh-cn": "zh", "zh-tw": "zh", "zh-hans": "zh",
                    "zh-hant": "zh"}
CHINESE = frozenset({"zh", "yue"})


# faster-whisper's memory relative to openai-whisper fp16 on the same GPU, from the published
# large-v2 figures (faster-whisper README, RTX 3070 Ti): openai fp16 4708 MB; faster fp16
# 4525 MB, batched (8) 6090 MB; int8 2926 MB, int8 batched (8) 4500 MB. Until measured.
FASTER_VRAM_FACTOR = {"float16": 4525 / 4708, "int8_float16": 2926 / 4708}
FASTER_BATCHED_FACTOR = {"float16": 6090 / 4708, "int8_float16": 4500 / 4708}


def local_models(models_dir: Path) -> list[str]:
    """Names of the checkpoints in models_dir (<name>.pt)."""
    try:
        return sorted(p.stem for p in models_dir.glob("*.pt") if p.is_file())
    except OSError:
        return []


def is_ct2_folder(folder: Path) -> bool:
    """A CTranslate2 (faster-whisper) model folder: model.bin, or model.bin.part1, part2 …"""
    try:
        return (folder / "model.bin").is_file() or any(
            p.suffix[5:].isdigit() for p in folder.glob("model.bin.part*"))
    except OSError:
        return False


def ct2_models(models_dir: Path) -> list[str]:
    """Names of the CTranslate2 folders in models_dir (<name>/model.bin), for faster-whisper."""
    try:
        return sorted(p.name for p in models_dir.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and is_ct2_folder(p))
    except OSError:
        return []


def local_engines(models_dir: Path) -> dict[str, list[str]]:
    """Each model on disk with the engine(s) that can run it: NAME.pt → openai-whisper,
    NAME/ (CTranslate2) → faster-whisper."""
    out: dict[str, list[str]] = {}
    for name in local_models(models_dir):
        out.setdefault(name, []).append(OPENAI)
    for name in ct2_models(models_dir):
        out.setdefault(name, []).append(FASTER)
    return dict(sorted(out.items()))


def known_models(models_dir: Path) -> set[str]:
    return set(OFFICIAL) | set(local_models(models_dir)) | set(ct2_models(models_dir))


def _closest_official(name: str) -> str:
    """The official model a name stands for: itself, the longest official name inside it
    ("my-small-zh" → small), else "large" (the safe guess for memory)."""
    if name in OFFICIAL:
        return name
    return next((o for o in sorted(OFFICIAL, key=len, reverse=True) if o in name), "large")


def default_vram_mb(name: str, engine: str = OPENAI, precision: str = "fp16") -> int:
    """Table value for official names; for imported ones guess from the name, else 'large'.
    faster-whisper: that value × the published ratio for its compute type (and batching)."""
    base = OFFICIAL[_closest_official(name)][1]
    if engine != FASTER:
        return base
    compute, _, batch = precision.partition("-batch")
    table = FASTER_BATCHED_FACTOR if batch else FASTER_VRAM_FACTOR
    factor = table.get(compute, table["int8_float16"] if "int8" in compute else
                       table["float16"] * (2 if compute == "float32" else 1))
    return int(base * factor)


def parameters_millions(name: str) -> int:
    """Parameter count (millions), guessed like default_vram_mb for imported names."""
    return OFFICIAL[_closest_official(name)][0]


@lru_cache(maxsize=1)
def whisper_languages() -> tuple[tuple[str, ...], dict[str, str]]:
    """openai-whisper's own language table (codes in its order, names → codes), read from
    whisper/tokenizer.py without importing the whisper package (which would import torch
    into the parent)."""
    spec = importlib.util.find_spec("whisper")
    assert spec is not None and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer.py"
    mod_spec = importlib.util.spec_from_file_location("_dropscribe_whisper_tokenizer", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return tuple(module.LANGUAGES), dict(module.TO_LANGUAGE_CODE)


def language_code(value: str) -> str:
    """A language code Whisper knows ('zh'; also 'Chinese', 'Mandarin', 'zh-CN' → 'zh').
    ValueError names the choices."""
    codes, names = whisper_languages()
    key = value.strip().lower()
    code = LANGUAGE_ALIASES.get(key) or names.get(key, key)
    if code not in codes:
        raise ValueError(f"unknown language {value!r}; use a code such as zh, en, ja, yue "
                         f"(all: {', '.join(sorted(codes))})")
    return code


def known_language(language: str) -> bool:
    """Does Whisper know this language (a code like "zh" or a name like "chinese")? Checked at
    admission: an unknown one would otherwise fail every attempt of the task."""
    try:
        language_code(language)
    except ValueError:
        return False
    return True
