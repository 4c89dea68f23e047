"""What we know about openai-whisper models without importing torch or whisper.

The parent process uses this to validate model names (subfolders, sidecars) and to seed VRAM
estimates; importing whisper there would cost ~300 MB and 1.5 s for nothing.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

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


def local_models(models_dir: Path) -> list[str]:
    """Names of the checkpoints in models_dir (<name>.pt)."""
    try:
        return sorted(p.stem for p in models_dir.glob("*.pt") if p.is_file())
    except OSError:
        return []


def known_models(models_dir: Path) -> set[str]:
    return set(OFFICIAL) | set(local_models(models_dir))


def _closest_official(name: str) -> str:
    """The official model a name stands for: itself, the longest official name inside it
    ("my-small-zh" → small), else "large" (the safe guess for memory)."""
    if name in OFFICIAL:
        return name
    return next((o for o in sorted(OFFICIAL, key=len, reverse=True) if o in name), "large")


def default_vram_mb(name: str) -> int:
    """Table value for official names; for imported ones guess from the name, else 'large'."""
    return OFFICIAL[_closest_official(name)][1]


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
