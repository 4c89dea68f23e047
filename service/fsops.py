"""Filesystem rules in one place: safe joins, link-safe opens, free names, no-overwrite moves.

Everything that turns a name from the inbox (or a database row) into a path, or opens a file a
user (or an attacker with write access to the inbox or outbox) controls, goes through here:

* A relative source name is split on ``/`` only on POSIX, where a backslash is an ordinary
  character (``team\\talk.wav`` is one file, not ``team/talk.wav``); on Windows on both.
* Folder checks compare *resolved* paths (a folder given through a symlink is the folder).
* Files a user controls are opened without following links and must be regular files, so a
  symlink to a private file or a FIFO can neither leak data nor block a thread.
* Names are kept under NAME_MAX (255 bytes) when we add to them (`` (2)``, ``.error.txt``).
* A move never overwrites, and a copy across disks never leaves a truncated file under the
  final name.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import shutil
import stat
import unicodedata
from pathlib import Path, PurePosixPath, PureWindowsPath

log = logging.getLogger(__name__)

NAME_MAX_BYTES = 255  # Linux, macOS; NTFS allows 255 UTF-16 units, which is never less
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


class UnsafePathError(ValueError):
    """A relative path or name would place output outside its folder."""


class NotRegularFileError(OSError):
    """A file a user controls is a link, a pipe, a device or a folder: refused, never read."""


# --- names -------------------------------------------------------------------------------------


def _separators() -> str:
    return r"[\\/]+" if os.name == "nt" else r"/+"


def _unsafe_part(part: str) -> bool:
    # ":" can only mean a drive or an NTFS alternate data stream on Windows; on POSIX it is an
    # ordinary character (a folder "10:30" is legal there).
    return part == ".." or "\x00" in part or (os.name == "nt" and ":" in part)


def split_relative(rel: PurePosixPath | str) -> list[str]:
    """Split an inbox-relative source name into safe parts, or raise UnsafePathError."""
    text = str(rel)
    if not text.strip():
        raise UnsafePathError("empty relative path")
    absolute = text.startswith("/") or (
        os.name == "nt" and (bool(PureWindowsPath(text).anchor) or text.startswith("\\"))
    )
    if absolute:
        raise UnsafePathError(f"absolute path or drive not allowed: {text!r}")
    parts = [p for p in re.split(_separators(), text) if p not in ("", ".")]
    if not parts or any(_unsafe_part(p) for p in parts):
        raise UnsafePathError(f"'..' or an unsafe component is not allowed: {text!r}")
    return parts


def fit_name(stem: str, reserve: int) -> str:
    """``stem`` cut (at a character boundary) so that ``reserve`` more bytes still fit."""
    limit = NAME_MAX_BYTES - reserve
    data = stem.encode("utf-8", "surrogateescape")
    if len(data) <= limit:
        return stem
    return data[:limit].decode("utf-8", "ignore").rstrip() or "file"


def display(text: str) -> str:
    """A name as a person may safely see it: control and format characters (newlines, terminal
    escapes, right-to-left overrides) and undecodable bytes written as escapes, so a file name
    cannot forge a log line or a table row. Ordinary text (Chinese included) is unchanged."""
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif unicodedata.category(ch) in _UNSAFE_CATEGORIES:
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def storable(text: str) -> bool:
    """True when ``text`` can be stored as text (no undecodable bytes from the file system)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- folders -------------------------------------------------------------------------------------


def inside(root: Path | str, candidate: Path | str) -> bool:
    """Is ``candidate`` (resolved, links followed) ``root`` or inside it (resolved)?"""
    root_r, cand_r = os.path.realpath(root), os.path.realpath(candidate)
    try:
        return os.path.commonpath([root_r, cand_r]) == root_r
    except ValueError:  # different drives on Windows
        return False


def same_or_inside(inner: Path | str, outer: Path | str) -> bool:
    """``inner`` is ``outer`` or lies inside it, comparing resolved paths."""
    return inside(outer, inner)


def ensure_inside(root: Path | str, path: Path | str) -> None:
    """Raise UnsafePathError unless ``path`` resolves inside ``root`` — checked at the moment
    of writing, because a folder can be swapped for a link after a task was started."""
    if not inside(root, path):
        raise UnsafePathError(f"{path} resolves outside {root} (a folder was replaced by a link)")


def safe_join(root: Path, rel: PurePosixPath | str) -> Path:
    """``root/rel`` for an inbox-relative path — never anywhere outside ``root``.

    Refuses absolute paths, drives, UNC paths and ``..``, and also a result whose folder leaves
    ``root`` through a symlinked folder. Used for the outbox, inbox, archive and failed folders.
    """
    parts = split_relative(rel)
    target = Path(root).joinpath(*parts)
    if not inside(Path(root), target.parent):
        raise UnsafePathError(f"{str(rel)!r} resolves outside {root}")
    return target


def output_dir_for(outbox: Path, rel_source: PurePosixPath | str) -> Path:
    """``outbox/<folder of the source relative to the inbox>``: ``team/会议 记录 1.mp3`` →
    ``outbox/team``, with every check of :func:`safe_join`."""
    return safe_join(outbox, rel_source).parent


# --- link-safe opens ------------------------------------------------------------------------------


def open_regular(path: Path | str) -> int:
    """Open a file a user controls for reading: never through a link (the last part), never
    blocking (a FIFO opens at once and is then refused), only a regular file. Returns an fd."""
    path = os.fspath(path)
    if not _NOFOLLOW and os.path.islink(path):  # Windows: no O_NOFOLLOW
        raise NotRegularFileError(errno.ELOOP, "it is a link, not a file", path)
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _BINARY)
    except OSError as err:
        if err.errno == errno.ELOOP or (err.errno == errno.EMLINK and _NOFOLLOW):
            raise NotRegularFileError(errno.ELOOP, "it is a link, not a file", path) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(errno.EINVAL, "it is not a regular file", path)
        if _NONBLOCK and hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path | str, limit: int) -> bytes:
    """The whole content of a small regular file (see :func:`open_regular`); ValueError when it
    is larger than ``limit`` bytes."""
    fd = open_regular(path)
    with open(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit // 1024} KB")
    return data


def check_source(root: Path | str, path: Path | str) -> os.stat_result:
    """The source file as the worker may read it: inside ``root`` after resolving, with no link
    as its last part, a regular file. Returns its lstat (to compare identity later)."""
    path = os.fspath(path)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise NotRegularFileError(errno.ELOOP, "the file was replaced by a link", path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFileError(errno.EINVAL, "it is not a regular file", path)
    if not inside(root, path):
        raise NotRegularFileError(errno.EXDEV, "its folder was replaced by a link", path)
    return st


# --- no-overwrite moves -------------------------------------------------------------------


def free_name(target: Path) -> Path:
    """``target``, or ``stem (2).ext``, ``stem (3).ext`` … — the first name not taken (no link,
    file or folder of that name, even a dangling link); a numbered name is kept under NAME_MAX
    by shortening the stem."""
    if not os.path.lexists(target):
        return target
    suffix = target.suffix
    stem = fit_name(target.stem, len(suffix.encode("utf-8", "surrogateescape")) + 7)
    for n in range(2, 10_000):
        candidate = target.with_name(f"{stem} ({n}){suffix}")
        if not os.path.lexists(candidate):
            return candidate
    raise FileExistsError(f"no free name for {target}")


def _copy_verified(src: Path, tmp: Path) -> None:
    """Copy to a new temp file, fsynced and checked for size — a full disk never leaves a
    truncated file (the caller gives it its final name only after this)."""
    try:
        with open(src, "rb") as fin, open(tmp, "xb") as fout:
            shutil.copyfileobj(fin, fout, 1024 * 1024)
            fout.flush()
            os.fsync(fout.fileno())
        if os.path.getsize(tmp) != os.path.getsize(src):
            raise OSError(errno.EIO, "the copy is incomplete", str(tmp))
        shutil.copystat(src, tmp)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def _link_no_overwrite(src: Path, target: Path) -> None:
    """Give ``src`` the name ``target`` unless it is taken (FileExistsError)."""
    try:
        os.link(src, target, follow_symlinks=False)
    except OSError as err:
        if err.errno == errno.EEXIST:
            raise
        # A file system without hard links (FAT, some shares): rename after a last check.
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "already exists", str(target)) from None
        os.rename(src, target)


def _claim_name(folder: Path, name: str) -> Path:
    return folder / f".{fit_name(name, 30)}.{secrets.token_hex(6)}.moving"


def _give_final_name(tmp: Path, target: Path) -> Path:
    """Link ``tmp`` to the first free name from ``target`` on (never overwriting), then drop
    the temp name."""
    for _ in range(100):  # a name taken between the check and the link: take the next one
        dest = free_name(target)
        try:
            _link_no_overwrite(tmp, dest)
        except FileExistsError:
            continue
        if os.path.lexists(tmp):
            os.unlink(tmp)
        return dest
    raise FileExistsError(f"no free name for {target}")


def move_no_overwrite(src: Path, target: Path) -> Path:
    """Move the file ``src`` to ``target`` or the next free name; returns where it went.

    Never overwrites, never leaves a partial file under a final name, and when two nodes move
    the same source at once exactly one succeeds (the other gets FileNotFoundError): the
    source is first claimed by an atomic rename to a hidden temp name.
    """
    src, target = Path(src), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    claimed = _claim_name(target.parent, src.name)
    try:
        os.rename(src, claimed)  # same disk: atomic, one winner
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
    else:
        return _give_final_name(claimed, target)
    # Another disk: claim the source in its own folder, copy, then drop it.
    claimed = _claim_name(src.parent, src.name)
    os.rename(src, claimed)
    try:
        tmp = target.with_name(f".{fit_name(target.name, 30)}.{secrets.token_hex(6)}.tmp")
        _copy_verified(claimed, tmp)
        try:
            dest = _give_final_name(tmp, target)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
    except BaseException:
        os.rename(claimed, src)  # the copy failed (a full disk): the source stays as it was
        raise
    os.unlink(claimed)
    return dest
