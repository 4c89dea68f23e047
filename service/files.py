"""Moving a finished source out of the inbox: archive/ on success, failed/ after the last try.

Nothing is ever deleted or overwritten: a name already taken in archive/ gets " (2)", " (3)", …
Sidecars (`x.mp3.json`) travel with their audio file.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path, PurePosixPath

from .fsops import display, mirror_join, move_no_overwrite, safe_join

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".json"


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def has_sidecar(path: Path) -> bool:
    """Is there anything named ``<file>.json`` (a link or a pipe counts: it is then refused
    with a reason, never ignored)? A name too long for a sidecar simply has none."""
    try:
        os.lstat(sidecar_of(path))
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENAMETOOLONG, errno.ENOTDIR):
            return False
        raise
    return True


def rel_source(inbox: Path, path: Path) -> str:
    """The inbox-relative, '/'-separated name stored in the task row."""
    return PurePosixPath(*path.relative_to(inbox).parts).as_posix()


def move_source(inbox: Path, rel: str, dest_root: Path, *, back: bool = False,
                moved_to: str | None = None) -> Path | None:
    """Move inbox/rel (and its sidecar) to dest_root/rel; returns the new path or None if the
    source is gone. Never overwrites: a taken name gets a numbered suffix; across disks the copy
    is verified before it gets its name, so a full disk leaves no truncated file (fsops).
    archive/ and failed/ mirror the inbox's folders with folders differing only in letter case
    kept apart (fsops.mirror_join); ``back`` moves from such a tree to the inbox (a retry),
    from ``moved_to`` (the task's recorded place there, see `moved_rel`) when it is known.
    Folders are left in place (a user's model subfolders stay)."""
    if back:
        src = safe_join(inbox, moved_to) if moved_to else mirror_join(inbox, rel, create=False)
    else:
        src = safe_join(inbox, rel)
    try:
        st = os.lstat(src)
    except OSError:
        st = None
    if st is None or not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        log.warning("cannot move %s: it is no longer in the inbox", display(str(src)))
        return None
    try:
        dest = safe_join(dest_root, rel) if back else mirror_join(dest_root, rel)
        target = move_no_overwrite(src, dest)
    except FileNotFoundError:
        if os.path.lexists(src):
            raise
        log.warning("cannot move %s: something else moved it just now", display(str(src)))
        return None
    side = sidecar_of(src)
    if os.path.lexists(side):
        try:
            move_no_overwrite(side, sidecar_of(target))
        except FileNotFoundError:
            pass  # another node settling the same task took it along just now
    return target


def moved_rel(target: Path, root: Path) -> str:
    """Where move_source put a file, relative to archive/ or failed/ (what `tasks.moved_to`
    records: it differs from the source's name when that was taken there)."""
    return Path(os.path.abspath(target)).relative_to(os.path.abspath(root)).as_posix()
