"""What we know about openai-whisper models without importing torch or whisper.

The parent process uses this to validate model names (subfolders, sidecars) and to seed VRAM
estimates; importing whisper there would cost ~300 MB and 1.5 s for nothing.
"""

from __future__ import annotations

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


# openai-whisper's language codes (whisper.tokenizer.LANGUAGES, in its order; tests check the copy),
# plus the names it also accepts. Copied so the parent can validate without importing whisper.
LANGUAGES: tuple[str, ...] = tuple(
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no "
    "th ur hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw "
    "gl mr pa si km sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl "
    "mg as tt haw ln ha ba jw su yue".split())
LANGUAGE_ALIASES = {"chinese": "zh", "mandarin": "zh", "english": "en", "cantonese": "yue",
                    "zh-cn": "zh", "zh-tw": "zh", "zh-hans": "zh", "zh-hant": "zh"}
CHINESE = frozenset({"zh", "yue"})


def language_code(value: str) -> str:
    """A language code Whisper knows ('zh', or 'Chinese' → 'zh'); ValueError names the choices."""
    code = value.strip().lower()
    code = LANGUAGE_ALIASES.get(code, code)
    if code not in LANGUAGES:
        raise ValueError(f"unknown language {value!r}; use a code such as zh, en, ja, "
                         f"yue (all: {', '.join(sorted(LANGUAGES))})")
    return code


def local_models(models_dir: Path) -> list[str]:
    """Names of the checkpoints in models_dir (<name>.pt)."""
    try:
        return sorted(p.stem for p in models_dir.glob("*.pt") if p.is_file())
    except OSError:
        return []


def known_models(models_dir: Path) -> set[str]:
    return set(OFFICIAL) | set(local_models(models_dir))


def default_vram_mb(name: str) -> int:
    """Table value for official names; for imported ones guess from the name, else 'large'."""
    if name in OFFICIAL:
        return OFFICIAL[name][1]
    for official in sorted(OFFICIAL, key=len, reverse=True):
        if official in name:
            return OFFICIAL[official][1]
    return OFFICIAL["large"][1]
