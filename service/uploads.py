"""Files uploaded from the web page: streamed to a temp file, then placed in ``inbox/web/``.

The watcher must never see half a file, and no name may write anywhere but the inbox:

* the body streams into ``paths.uploads`` (outside the inbox), counted against
  ``http.max_upload_mb`` as it arrives; an interrupted or oversized upload is deleted there;
* only a complete file is hard-linked into ``inbox/web/<cleaned name>`` — a link cannot replace
  a file that exists, so two uploads of one name become ``talk.wav`` and ``talk (2).wav``; its
  sidecar (the page's choices, the same JSON the inbox uses) is placed first, so the watcher
  never admits the audio without it;
* names go through the outputs' path rules (``outputs.safe_join``) plus Windows' naming rules
  (``fsops.windows_name_problem``: device names like ``CON``, trailing dots); a bad name is
  refused with a reason.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import anyio

from . import audio, fsops, outputs
from .config import Settings
from .files import SIDECAR_SUFFIX

log = logging.getLogger(__name__)

WEB_FOLDER = "web"
MAX_NAME_BYTES = 200  # leaves room for " (12)", ".json" and the outputs' suffixes
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UploadError(ValueError):
    """The upload is refused; ``key`` names an i18n message, ``kw`` fills it in."""

    def __init__(self, key: str, status: int = 400, **kw: object) -> None:
        super().__init__(key)
        self.key, self.status, self.kw = key, status, kw


def clean_name(name: str, ignore: list[str], root: Path) -> PurePosixPath:
    """An upload's relative path ('meeting.mp3', 'folder/会议.m4a'), checked part by part.

    Refused (UploadError): empty, absolute, '..', NUL or control characters, Windows device
    names and characters, trailing dot or space, too long, hidden or ignored by the watcher,
    or not an audio/video extension the watcher picks up.
    """
    if not name or _CONTROL.search(name):
        raise UploadError("upload.bad_name", name=name.replace("\x00", "\\0"))
    if "\\" in name:  # browsers send '/'-separated paths: this is a Windows or UNC path
        raise UploadError("upload.bad_name", name=name)
    try:  # the outputs' own rules: no '..', drive, UNC or absolute path, no symlinked escape
        parts = outputs.safe_join(root, name).relative_to(root).parts
    except (outputs.UnsafePathError, ValueError):
        raise UploadError("upload.bad_name", name=name) from None
    for part in parts:
        if fsops.windows_name_problem(part) or part != part.strip():
            raise UploadError("upload.bad_name", name=name)
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            raise UploadError("upload.too_long_name", name=name)
        if any(fnmatch.fnmatch(part, pat) for pat in ignore):
            raise UploadError("upload.ignored_name", name=name)
    if not audio.is_audio_name(parts[-1]):
        raise UploadError("upload.not_media", name=name)
    return PurePosixPath(*parts)


@dataclass(frozen=True)
class Placed:
    """Where an upload went: its inbox-relative name (the task's source) and size."""

    source: str
    size: int


def _link_exclusive(src: Path, dest: Path) -> None:
    """Put the complete file src at dest without ever replacing dest (FileExistsError if
    taken). A hard link is atomic and exclusive; where there are none (FAT, some shares, or
    paths.uploads on another disk) the file is first copied to a hidden temp name beside dest
    (the watcher ignores '.*' names) and then renamed, so the watcher still never sees a part."""
    try:
        os.link(src, dest)
        return
    except FileExistsError:
        raise
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV,
                             errno.EMLINK) and os.name != "nt":
            raise
    part = dest.with_name(f".{secrets.token_hex(8)}.part")
    try:
        shutil.copyfile(src, part)
        if os.path.lexists(dest):
            raise FileExistsError(dest)
        os.rename(part, dest)  # Windows: refuses an existing dest; POSIX: checked just above
    finally:
        part.unlink(missing_ok=True)


def _flush(fh: Any) -> None:
    fh.flush()
    os.fsync(fh.fileno())


def _candidates(rel: PurePosixPath) -> list[PurePosixPath]:
    stem, suffix = PurePosixPath(rel.name).stem, PurePosixPath(rel.name).suffix
    return [rel] + [rel.with_name(f"{stem} ({n}){suffix}") for n in range(2, 1000)]


class Uploads:
    """Receives uploads for one service (its inbox, uploads folder and size limit)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.inbox = settings.inbox
        self.temp_dir = settings.uploads
        self.limit = int(settings.http.max_upload_mb * 1024 * 1024)

    def clean(self, name: str) -> PurePosixPath:
        return clean_name(name, self.settings.watcher.ignore, self.inbox / WEB_FOLDER)

    async def receive(self, rel: PurePosixPath, chunks: AsyncIterator[bytes],
                      sidecar: dict, declared: int | None) -> Placed:
        """Stream chunks to a temp file, then place it (and its sidecar) in inbox/web/."""
        if declared is not None and declared > self.limit:
            raise UploadError("upload.too_large", status=413, mb=self.settings.http.max_upload_mb)
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.temp_dir / f"{secrets.token_hex(8)}.part"
        size = 0
        try:
            with open(tmp, "xb") as fh:  # disk work in threads: the event loop serves others
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.limit:
                        raise UploadError("upload.too_large", status=413,
                                          mb=self.settings.http.max_upload_mb)
                    await anyio.to_thread.run_sync(fh.write, chunk)
                await anyio.to_thread.run_sync(_flush, fh)
            if declared is not None and size != declared:
                raise UploadError("upload.incomplete")
            return await anyio.to_thread.run_sync(self.place, tmp, rel, sidecar, size)
        finally:
            tmp.unlink(missing_ok=True)  # placed files are links or copies: the temp can go

    def place(self, tmp: Path, rel: PurePosixPath, sidecar: dict, size: int) -> Placed:
        """Link a complete temp file into inbox/web/rel under a free name; sidecar first."""
        for cand in _candidates(PurePosixPath(WEB_FOLDER) / rel):
            dest = outputs.safe_join(self.inbox, cand)  # re-checks: no symlinked folder escape
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest = outputs.safe_join(self.inbox, cand)  # and again, now that the folder exists
            side = dest.with_name(dest.name + SIDECAR_SUFFIX)
            if os.path.lexists(dest) or os.path.lexists(side):
                continue
            side_tmp = None
            if sidecar:
                side_tmp = self.temp_dir / f"{secrets.token_hex(8)}.json.part"
                side_tmp.write_text(json.dumps(sidecar, ensure_ascii=False), encoding="utf-8")
                try:
                    _link_exclusive(side_tmp, side)
                except FileExistsError:
                    continue
                finally:
                    side_tmp.unlink(missing_ok=True)
            try:
                _link_exclusive(tmp, dest)
            except FileExistsError:
                if sidecar:
                    side.unlink(missing_ok=True)
                continue
            source = cand.as_posix()
            log.info("web upload placed in the inbox: %s (%d bytes)", source, size)
            return Placed(source=source, size=size)
        raise UploadError("upload.no_free_name", name=str(rel))
