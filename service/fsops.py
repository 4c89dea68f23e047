"""Filesystem rules in one place: safe joins, link-safe opens, free names, no-overwrite moves.

Everything that turns a name from the inbox (or a database row) into a path, or opens a file a
user (or an attacker with write access to the inbox or outbox) controls, goes through here:

* A relative source name is split on ``/`` only on POSIX, where a backslash is an ordinary
  character (``team\\talk.wav`` is one file, not ``team/talk.wav``); on Windows on both.
* Folder checks compare *resolved* paths (a folder given through a symlink is the folder).
* Files a user controls are opened without following links and must be regular files, so a
  symlink to a private file or a FIFO can neither leak data nor block a thread.
* Names are kept under NAME_MAX (255 bytes) when we add to them (`` (2)``, ``.error.txt``).
* Names we give (transcripts, reports) follow Windows' rules on every platform — no device
  names (CON, NUL, COM1 …), no ``<>:"|?*`` or control characters, no trailing dot or space —
  so an outbox on a share written from Linux stays readable from Windows; and a name is free
  only when no name differing just in letter case is taken (NTFS and macOS ignore case) —
  for the folders of outbox/, archive/ and failed/ too (``Team/`` and ``team/`` stay apart).
* One free-name allocator (`` (2)``, `` (3)`` …) and one atomic write (temp file beside the
  target, fsynced, renamed) serve every module.
* A path too long to write is a clear error before any work, not a cryptic failure half-way:
  Windows' 260 characters (naming the registry switch), elsewhere 255 bytes a name and
  4095 bytes a path.
* A move never overwrites, and a copy across disks never leaves a truncated file under the
  final name.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import secrets
import shutil
import stat
import time
import unicodedata
from collections.abc import Callable, Collection, Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO

log = logging.getLogger(__name__)

NAME_MAX_BYTES = 255  # Linux, macOS; NTFS allows 255 UTF-16 units, which is never less
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
WINDOWS_MAX_PATH = 260  # MAX_PATH, counting the terminating NUL: 259 characters fit
POSIX_PATH_MAX_BYTES = 4095  # Linux PATH_MAX is 4096 bytes, counting the terminating NUL
# Device names Windows reserves in every folder, with any extension ("nul.txt", "COM1.mp3").
_WINDOWS_DEVICES = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³]|conin\$|conout\$)$",
                              re.IGNORECASE)
_WINDOWS_BAD = re.compile(r'[<>:"|?*\\/\x00-\x1f\x7f]')


class UnsafePathError(ValueError):
    """A relative path or name would place output outside its folder."""


class PathTooLongError(UnsafePathError):
    """A path Windows cannot use without long paths switched on."""


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


# --- Windows naming rules (checked on every platform) ----------------------------------------


def windows_name_problem(part: str) -> bool:
    """True when Windows refuses (or silently changes) this one path part: a device name with
    any extension, a character NTFS forbids, a control character, a trailing dot or space."""
    base = part.split(".", 1)[0].rstrip(" ")
    return bool(_WINDOWS_DEVICES.match(base) or _WINDOWS_BAD.search(part)
                or part.endswith((".", " ")))


def windows_safe_name(part: str) -> str:
    """``part`` changed as little as possible to pass :func:`windows_name_problem`: forbidden
    characters become ``_``, trailing dots and spaces go, a device name gets ``_`` appended
    (``CON`` → ``CON_``, ``nul.tar`` → ``nul_.tar``). Chinese and other text is unchanged."""
    out = _WINDOWS_BAD.sub("_", part).rstrip(" .") or "_"
    base = out.split(".", 1)[0].rstrip(" ")
    if _WINDOWS_DEVICES.match(base):
        out = base + "_" + out[len(base):]
    return out


def _windows_long_paths_enabled() -> bool:
    """HKLM\\SYSTEM\\CurrentControlSet\\Control\\FileSystem LongPathsEnabled = 1?"""
    try:
        import winreg
    except ImportError:
        return False
    try:
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE,
                            r"SYSTEM\CurrentControlSet\Control\FileSystem") as key:
            return winreg.QueryValueEx(key, "LongPathsEnabled")[0] == 1
    except OSError:
        return False


def check_path_length(
    path: Path | str,
    *,
    windows: bool | None = None,
    long_paths_enabled: Callable[[], bool] = _windows_long_paths_enabled,
) -> None:
    """Raise PathTooLongError, naming the limit, for a path the file system would refuse, so a
    task fails with a plain reason before any work (and nothing is lost) instead of half-way:

    * Windows: ≥ 260 characters (MAX_PATH) without the LongPathsEnabled switch;
    * elsewhere (Linux): a name part over 255 bytes (NAME_MAX) or a path over 4095 bytes
      (PATH_MAX, 4096 with its NUL), counting the hidden temp name written beside it first.

    ``windows`` and ``long_paths_enabled`` are injectable so both rules are tested on every
    platform."""
    windows = os.name == "nt" if windows is None else windows
    if windows:
        full = str(PureWindowsPath(path))
        if len(full) < WINDOWS_MAX_PATH or long_paths_enabled():
            return
        raise PathTooLongError(
            f"the path is {len(full)} characters long and Windows allows "
            f"{WINDOWS_MAX_PATH - 1} (shorten the folder or file name, or turn on long paths: "
            "registry HKLM\\SYSTEM\\CurrentControlSet\\Control\\FileSystem, "
            f"LongPathsEnabled = 1, then restart): {full}"
        )
    full = os.path.abspath(path)
    for part in PurePosixPath(full).parts[1:]:
        size = len(part.encode("utf-8", "surrogateescape"))
        if size > NAME_MAX_BYTES:
            raise PathTooLongError(
                f"the name {part!r} is {size} bytes long and the file system allows "
                f"{NAME_MAX_BYTES} (shorten the folder or file name): {full}"
            )
    name = PurePosixPath(full).name
    written = len(full.encode("utf-8", "surrogateescape")) - len(
        name.encode("utf-8", "surrogateescape")) + len(
        temp_prefix(name).encode("utf-8", "surrogateescape")) + TEMP_TAIL
    size = max(written, len(full.encode("utf-8", "surrogateescape")))
    if size > POSIX_PATH_MAX_BYTES:
        raise PathTooLongError(
            f"the path is {size} bytes long and the file system allows {POSIX_PATH_MAX_BYTES} "
            f"(shorten the folder or file names, or use an outbox closer to the root): {full}"
        )


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


def _folder_for(parent: Path, name: str) -> tuple[str, bool]:
    """The folder in ``parent`` that holds the outputs of inbox folder ``name``, and whether it
    is a numbered one (to be created now, so it is found again). ``name`` itself when a folder
    of exactly that spelling is there or nothing differing only in letter case is; otherwise
    (``team/`` when ``Team/`` is taken: one folder on NTFS, macOS and a share Windows reads)
    ``team (2)``, ``team (3)`` … — the first one of exactly this spelling that exists, else the
    first free one (case-insensitively), so two inbox folders never merge."""
    try:
        entries = os.listdir(parent)
    except (FileNotFoundError, NotADirectoryError):
        return name, False
    folded = {e.casefold() for e in entries}
    if name in entries or name.casefold() not in folded:
        return name, False
    stem = fit_name(name, 8)
    for n in range(2, 10_000):
        candidate = f"{stem} ({n})"
        if candidate in entries:
            return candidate, False
        if candidate.casefold() not in folded:
            return candidate, True
    raise FileExistsError(f"no free folder name for {name!r} in {parent}")


def mirror_join(root: Path, rel: PurePosixPath | str, *, windows_names: bool = False,
                create: bool = True) -> Path:
    """``root/rel`` in a tree of ours that mirrors the inbox's folders (outbox/, archive/,
    failed/): every check of :func:`safe_join`, and folder names that differ only in letter
    case (``Team/`` and ``team/`` on Linux) kept apart, as free names are for files (see
    :func:`_folder_for`). With ``windows_names`` each folder name is first made safe for Windows
    readers. A numbered folder is created (best effort) as it is chosen, so it is found again
    (``create=False`` to look a file up without creating anything)."""
    parts = split_relative(rel)
    folders = [windows_safe_name(p) for p in parts[:-1]] if windows_names else parts[:-1]
    here = Path(root)
    chosen = []
    for name in folders:
        name, new = _folder_for(here, name)
        here = here / name
        chosen.append(name)
        if new and create and inside(root, here.parent):
            try:
                here.mkdir(parents=True, exist_ok=True)
            except OSError:
                pass  # the write says why, in its own words
    return safe_join(root, PurePosixPath(*chosen, parts[-1]))


def output_dir_for(outbox: Path, rel_source: PurePosixPath | str) -> Path:
    """``outbox/<folder of the source relative to the inbox>``: ``team/会议 记录 1.mp3`` →
    ``outbox/team``, with every check of :func:`safe_join`; each folder name made safe for
    Windows readers (``aux/`` → ``aux_/``, ``notes./`` → ``notes/``) on every platform, and
    kept apart from a folder differing only in letter case (:func:`mirror_join`)."""
    out_dir = mirror_join(outbox, rel_source, windows_names=True).parent
    try:
        out_dir.mkdir(parents=True, exist_ok=True)  # taken now, not when the outputs are written
    except OSError:
        pass  # a path too long, a full disk: checked and said where the outputs are written
    return out_dir


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


# --- files other programs still hold -----------------------------------------------------

Opener = Callable[[str], None]  # opens and closes a path, raising OSError if it cannot


def _windows_exclusive_open(path: str) -> None:
    """CreateFileW with share mode 0: fails with a sharing violation (32) or lock violation
    (33) while any other program (a copier, a cloud sync, an antivirus scan) has it open."""
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    create = kernel32.CreateFileW
    create.restype = wintypes.HANDLE
    create.argtypes = [wintypes.LPCWSTR, wintypes.DWORD, wintypes.DWORD, wintypes.LPVOID,
                       wintypes.DWORD, wintypes.DWORD, wintypes.HANDLE]
    generic_read, open_existing, invalid = 0x80000000, 3, wintypes.HANDLE(-1).value
    handle = create(path, generic_read, 0, None, open_existing, 0x80, None)
    if handle == invalid:
        code = ctypes.get_last_error()
        raise PermissionError(errno.EACCES, ctypes.FormatError(code).strip(), path, code)
    kernel32.CloseHandle(handle)


def _posix_open(path: str) -> None:
    """POSIX has no exclusive open: a file we may not read (PermissionError) is the case."""
    os.close(os.open(path, os.O_RDONLY | _NONBLOCK | _NOFOLLOW))


def default_opener() -> Opener:
    return _windows_exclusive_open if os.name == "nt" else _posix_open


def held_elsewhere(path: Path | str, opener: Opener | None = None) -> OSError | None:
    """Why ``path`` cannot be taken yet — another program holds it (a sharing violation on
    Windows), we may not open it, or it vanished for a moment — or None when it is free. Every
    such file is simply *not stable yet*; the watcher waits (with a limit). ``opener`` is the
    probe (injected in tests: Linux has no sharing violations to produce)."""
    try:
        (opener or default_opener())(os.fspath(path))
    except (PermissionError, FileNotFoundError) as err:
        return err
    except OSError as err:
        if getattr(err, "winerror", None) in (32, 33) or err.errno in (errno.EBUSY,
                                                                       errno.ETXTBSY):
            return err
        raise
    return None


# --- no-overwrite moves -------------------------------------------------------------------


def _names_in(folder: Path) -> set[str]:
    """Every name in ``folder``, case-folded (links and folders too); empty if it is missing."""
    try:
        return {name.casefold() for name in os.listdir(folder)}
    except (FileNotFoundError, NotADirectoryError):
        return set()


def free_stem(
    folder: Path, stem: str, suffixes: Iterable[str], taken: Collection[str] = ()
) -> str:
    """The one free-name allocator: ``stem``, else ``stem (2)``, ``stem (3)`` … — the first for
    which no ``<candidate><suffix>`` exists in ``folder`` and which is not in ``taken`` (names
    given but not written yet), comparing case-insensitively (``Talk`` and ``talk`` are one
    name on NTFS and macOS, and on a share Windows reads)."""
    existing = _names_in(Path(folder))
    given = {t.casefold() for t in taken}
    ends = [sfx.casefold() for sfx in suffixes] or [""]
    for n in range(1, 10_000):
        candidate = stem if n == 1 else f"{stem} ({n})"
        folded = candidate.casefold()
        if folded not in given and not any(folded + end in existing for end in ends):
            return candidate
    raise FileExistsError(f"no free name for {stem!r} in {folder}")


def free_name(target: Path) -> Path:
    """``target``, or ``stem (2).ext``, ``stem (3).ext`` … — the first name not taken (no link,
    file or folder of that name in any letter case, even a dangling link); a numbered name is
    kept under NAME_MAX by shortening the stem."""
    target = Path(target)
    suffix = target.suffix
    if not os.path.lexists(target) and target.name.casefold() not in _names_in(target.parent):
        return target
    stem = fit_name(target.stem, len(suffix.encode("utf-8", "surrogateescape")) + 7)
    return target.with_name(free_stem(target.parent, stem, [suffix], taken={stem}) + suffix)


# --- atomic writes ------------------------------------------------------------------------


TEMP_TAIL = len("0123456789ab.tmp")  # what follows a temp prefix: 12 random hex digits, ".tmp"


def temp_prefix(final_name: str) -> str:
    """``.<final name>.``, or ``.<hash of it>.`` where the whole temp name would be too long."""
    prefix = f".{final_name}."
    if len(prefix.encode("utf-8", "surrogateescape")) + TEMP_TAIL > 240:
        digest = hashlib.sha1(final_name.encode("utf-8", "surrogateescape")).hexdigest()
        prefix = f".{digest[:16]}."
    return prefix


def temp_beside(target: Path) -> Path:
    """A new hidden temp name in ``target``'s folder (the watcher ignores ``.*`` and ``*.tmp``;
    outputs.is_temp_name knows the pattern): ``.<name>.<12 hex>.tmp``."""
    target = Path(target)
    return target.with_name(f"{temp_prefix(target.name)}{secrets.token_hex(6)}.tmp")


def write_temp(target: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Create a temp file beside ``target``, let ``write`` fill it, fsync; the caller renames
    it (alone: :func:`atomic_write`; as one set: outputs._commit)."""
    tmp = temp_beside(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _BINARY, 0o644)
    try:
        with open(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        _discard(tmp)
        raise
    return tmp


def _discard(tmp: Path) -> None:
    """Remove a temp file of ours that will not be renamed into place (gone already: fine)."""
    try:
        os.unlink(tmp)
    except OSError:
        pass


def fsync_dir(directory: Path) -> None:
    """Make renames durable (POSIX); Windows has no directory handles to fsync."""
    if os.name == "nt":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(target: Path, data: bytes | Callable[[IO[bytes]], None]) -> Path:
    """Replace ``target`` with new content so a reader sees the old file or the new one, never
    half of one (status file, model checkpoints, single reports)."""
    target = Path(target)
    write = data if callable(data) else (lambda fh: fh.write(data))
    tmp = write_temp(target, write)
    try:
        replace(tmp, target)
    except BaseException:
        _discard(tmp)
        raise
    fsync_dir(target.parent)
    return target


def replace(src: Path | str, dest: Path | str) -> None:
    """os.replace, retried while another program briefly holds either file (see retried)."""
    retried(os.replace, src, dest)


# Windows: ERROR_ACCESS_DENIED (a target open without delete sharing), ERROR_SHARING_VIOLATION,
# ERROR_LOCK_VIOLATION — what an antivirus scan, the search indexer, Explorer's preview or a
# player holding the file for a moment cause. They pass; a POSIX EACCES does not.
_TRANSIENT_WINERRORS = frozenset({5, 32, 33})
RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)  # ~3 s in all, then the error stands


def transient(err: OSError) -> bool:
    """A sharing violation that goes away by itself (Windows), not a real refusal."""
    return getattr(err, "winerror", None) in _TRANSIENT_WINERRORS or err.errno == errno.EBUSY


def retried(fn: Callable, *args: object, sleep: Callable[[float], None] = time.sleep,
            delays: tuple[float, ...] | None = None) -> object:
    """``fn(*args)``, tried again with a short backoff (RETRY_DELAYS) while it fails with a
    transient sharing violation (every move, rename and replace of ours goes through here)."""
    for delay in (*(RETRY_DELAYS if delays is None else delays), None):
        try:
            return fn(*args)
        except OSError as err:
            if delay is None or not transient(err):
                raise
            log.debug("%s: %s held by another program; retrying in %.2f s",
                      getattr(fn, "__name__", fn), args[0] if args else "", delay)
            sleep(delay)
    raise AssertionError("unreachable")


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
        retried(os.rename, src, target)


CLAIM_SUFFIX = ".moving"
# ".<name>.<seconds since 1970, hex>-<8 random hex>.moving"; before 2026-12: 12 random hex
_CLAIM = re.compile(r"\.(?P<name>.+)\.(?:(?P<at>[0-9a-f]{1,12})-[0-9a-f]{8}|[0-9a-f]{12})"
                    + re.escape(CLAIM_SUFFIX), re.S)


def _claim_name(folder: Path, name: str) -> Path:
    """A hidden name for a file while it is moved. It keeps the file's own name and the time
    of the claim, so a move cut short (the node stopped) can be undone: see read_claim."""
    return folder / (f".{fit_name(name, 30)}.{int(time.time()):x}-{secrets.token_hex(4)}"
                     f"{CLAIM_SUFFIX}")


def read_claim(name: str) -> tuple[str, int | None] | None:
    """(the file's own name, when it was claimed in seconds since 1970 or None if the claim
    predates that) for a claim name, else None."""
    m = _CLAIM.fullmatch(name)
    if m is None:
        return None
    return m["name"], int(m["at"], 16) if m["at"] else None


def is_numbered_name(name: str, target_name: str) -> bool:
    """Is `name` one free_name could have given for `target_name` (itself, ``stem (2).ext`` …,
    any letter case, the stem shortened as free_name shortens it)?"""
    suffix = PurePosixPath(target_name).suffix
    stem = target_name[: len(target_name) - len(suffix)]
    short = fit_name(stem, len(suffix.encode("utf-8", "surrogateescape")) + 7)
    pattern = rf"(?:{re.escape(stem)}|{re.escape(short)} \([0-9]+\)){re.escape(suffix)}"
    return re.fullmatch(pattern, name, re.IGNORECASE | re.S) is not None


def undo_claim(claim: Path) -> Path | None:
    """Give a file left under a claim name (its move was cut short) a visible name again in
    its folder: its own, or the next free one. When the move had already given it its final
    name there (the claim is a second link to the same file), only the claim name goes.
    Returns where the file is; None if the claim is not a file of ours."""
    found = read_claim(claim.name)
    st = os.lstat(claim)
    if found is None or not stat.S_ISREG(st.st_mode):
        return None
    if st.st_nlink > 1:
        with os.scandir(claim.parent) as entries:
            for entry in entries:
                if entry.name != claim.name and is_numbered_name(entry.name, found[0]) and \
                        os.path.samestat(entry.stat(follow_symlinks=False), st):
                    os.unlink(claim)  # the same file under its final name: nothing is removed
                    return Path(entry.path)
    return _give_final_name(claim, claim.with_name(found[0]))


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
        retried(os.rename, src, claimed)  # same disk: atomic, one winner
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
    else:
        return _give_final_name(claimed, target)
    # Another disk: claim the source in its own folder, copy, then drop it.
    claimed = _claim_name(src.parent, src.name)
    retried(os.rename, src, claimed)
    try:
        tmp = target.with_name(f".{fit_name(target.name, 30)}.{secrets.token_hex(6)}.tmp")
        _copy_verified(claimed, tmp)
        try:
            dest = _give_final_name(tmp, target)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
    except BaseException:
        retried(os.rename, claimed, src)  # the copy failed (a full disk): the source stays
        raise
    os.unlink(claimed)
    return dest
