"""Moving a finished source out of the inbox: archive/ on success, failed/ after the last try.

Nothing is ever deleted or overwritten: a name already taken in archive/ gets " (2)", " (3)", …
Sidecars (`x.mp3.json`) travel with their audio file.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path, PurePosixPath

from .outputs import safe_join

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".json"


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def rel_source(inbox: Path, path: Path) -> str:
    """The inbox-relative, '/'-separated name stored in the task row."""
    return PurePosixPath(*path.relative_to(inbox).parts).as_posix()


def _free_name(target: Path) -> Path:
    if not target.exists():
        return target
    stem, suffix = target.stem, target.suffix
    for n in range(2, 10_000):
        candidate = target.with_name(f"{stem} ({n}){suffix}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"no free name for {target}")


def move_source(inbox: Path, rel: str, dest_root: Path) -> Path | None:
    """Move inbox/rel (and its sidecar) to dest_root/rel; returns the new path or None if the
    source is gone. Never overwrites: a taken name gets a numbered suffix. Folders are left in
    place (a user's model subfolders stay)."""
    src = safe_join(inbox, rel)
    if not src.is_file():
        log.warning("cannot move %s: it is no longer in the inbox", src)
        return None
    target = _free_name(safe_join(dest_root, rel))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.move(str(src), str(target))
    except FileNotFoundError:
        if src.exists():
            raise
        log.warning("cannot move %s: something else moved it just now", src)
        return None
    side = sidecar_of(src)
    if side.is_file():
        shutil.move(str(side), str(_free_name(sidecar_of(target))))
    return target

