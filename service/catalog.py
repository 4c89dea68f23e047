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
