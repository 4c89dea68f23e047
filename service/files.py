"""Moving a finished source out of the inbox: archive/ on success, failed/ after the last try.

Nothing is ever deleted or overwritten: a name already taken in archive/ gets " (2)", " (3)", …
Sidecars (`x.mp3.json`) travel with their audio file.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from . import fsops
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
        src = stored_path(inbox, rel, moved_to)
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


def stored_path(root: Path, rel: str | PurePosixPath, moved_to: str | None) -> Path:
    """Where a task's source is under archive/ or failed/: the place its row recorded
    (`moved_to`, " (2)" when the name was taken), else where move_source would put `rel`
    (rows from before moved_to was recorded)."""
    return safe_join(root, moved_to) if moved_to else mirror_join(root, rel, create=False)


def moved_rel(target: Path, root: Path) -> str:
    """Where move_source put a file, relative to archive/ or failed/ (what `tasks.moved_to`
    records: it differs from the source's name when that was taken there)."""
    return Path(os.path.abspath(target)).relative_to(os.path.abspath(root)).as_posix()


def find_moved(dest_root: Path, rel: str, size: int | None, mtime_ns: int | None) -> Path | None:
    """This very file (same size and modification time) under dest_root where move_source
    would have put it: a move that happened without its row learning it (the node stopped
    between the two), so the source is not "missing" but there."""
    if size is None or mtime_ns is None:
        return None
    target = mirror_join(dest_root, rel, create=False)
    try:
        with os.scandir(target.parent) as entries:
            for entry in entries:
                if not fsops.is_numbered_name(entry.name, target.name):
                    continue
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime_ns) == (size, mtime_ns):
                    return Path(entry.path)
    except OSError:
        return None
    return None


def recover_claims(roots: Iterable[Path], claimed_before: float | None) -> list[Path]:
    """Files left under a hidden claim name in the inbox, archive/ or failed/ because a node
    stopped in the middle of moving them get a visible name again (fsops.undo_claim): the
    inbox's are then settled as usual, the others are found by `find_moved`. Only claims made
    before `claimed_before` (seconds since 1970) — another node may be moving a file right now
    — or every claim when None (no other node can be: one service on this database)."""
    restored = []
    for root in roots:
        for folder, _dirs, names in os.walk(root):  # links to folders are not followed
            for name in names:
                claim = fsops.read_claim(name)
                if claim is None or (claimed_before is not None and (
                        claim[1] is None or claim[1] >= claimed_before)):
                    continue
                path = Path(folder) / name
                try:
                    where = fsops.undo_claim(path)
                except OSError as err:
                    log.error("could not give %s its name back: %s", display(str(path)), err)
                    continue
                if where is not None:
                    log.warning("%s was left half-moved by a stop; it is %s again",
                                display(claim[0]), display(str(where)))
                    restored.append(where)
    return restored
