"""Transcript files and error reports in the outbox, written atomically and only inside it.

Three rules shape this module:

* Nothing outside ``outbox/`` is ever written because of a file or folder name (or a sidecar):
  ``output_dir_for`` is the one place a source's relative path becomes an output folder.
* A reader (a person, a sync client) never sees a half-written transcript or a mixed set:
  every format is rendered to a hidden temp file first, fsynced, and only then renamed into
  place; if anything fails, the temps are removed and the previous set stays as it was.
* Text is UTF-8 without a BOM with ``\\n`` line ends on every platform, so outputs are
  byte-identical on Windows and Linux and Chinese text is stored as itself.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, TextIO

from . import fsops

# Path rules live in fsops (one place for every folder); re-exported for existing callers.
from .fsops import UnsafePathError, fit_name, output_dir_for, safe_join  # noqa: F401

log = logging.getLogger(__name__)

OUTPUT_FORMATS = ("txt", "srt", "vtt", "tsv", "json")

# Options for whisper's subtitle writers: keep whisper's own segmentation, no karaoke tags.
WRITER_OPTIONS: dict[str, Any] = {
    "max_line_width": None,
    "max_line_count": None,
    "highlight_words": False,
}

_SEGMENT_KEYS = ("id", "start", "end", "text", "avg_logprob", "no_speech_prob")
_RESERVED_JSON_KEYS = frozenset({"text", "segments", "language"})

# Our temp files: ".<final name>.<12 hex>.tmp" — hidden, ignored by the watcher (".*", "*.tmp"),
# and specific enough that cleanup never mistakes someone else's file for ours.
_TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$", re.DOTALL)


def _check_stem(stem: str) -> None:
    if not stem or stem.strip() in ("", ".", "..") or re.search(r"[/\x00]", stem):
        raise UnsafePathError(f"unsafe output name: {stem!r}")
    if os.name == "nt" and (":" in stem or "\\" in stem):  # on POSIX a backslash is a character
        raise UnsafePathError(f"unsafe output name: {stem!r}")


# --- atomic file writing --------------------------------------------------------------------


_TEMP_TAIL = fsops.TEMP_TAIL
_temp_prefix = fsops.temp_prefix


def _temp_path(out_dir: Path, final_name: str) -> Path:
    return fsops.temp_beside(Path(out_dir) / final_name)


def _write_temp(out_dir: Path, final_name: str, render: Callable[[TextIO], None]) -> Path:
    """Render text (UTF-8, ``\\n`` line ends) into a temp beside the final name (fsops)."""
    def write(raw: IO[bytes]) -> None:
        fh = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
        render(fh)
        fh.flush()
        fh.detach()  # fsops closes the raw file after its fsync

    return fsops.write_temp(Path(out_dir) / final_name, write)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove temp file %s: %s", path, exc)


_fsync_dir = fsops.fsync_dir


def _backup(final: Path) -> Path | None:
    """Keep the current version of ``final`` aside (hard link, else copy) for a rollback."""
    if not final.exists():
        return None
    backup = _temp_path(final.parent, final.name)
    try:
        os.link(final, backup)
    except OSError:  # FAT/exFAT or a share without hard links
        shutil.copy2(final, backup)
    return backup


def _commit(pairs: Sequence[tuple[Path, Path]]) -> None:
    """Rename every temp over its final name; on any failure restore the previous set.

    Each rename is atomic; backups make the set all-or-nothing too (on Windows a rename can
    fail when another program holds the old transcript open).
    """
    done: list[tuple[Path, Path | None]] = []
    try:
        for tmp, final in pairs:
            backup = _backup(final)
            done.append((final, backup))
            fsops.replace(tmp, final)
    except BaseException:
        for final, backup in reversed(done):
            try:
                if backup is not None:
                    fsops.replace(backup, final)
                    # rename() between two links to the same file does nothing and keeps both
                    # names (POSIX); that happens when the final was never replaced.
                    _unlink_quietly(backup)
                else:
                    _unlink_quietly(final)
            except OSError as exc:
                log.error("could not restore %s after a failed write: %s", final, exc)
        for tmp, _final in pairs:
            _unlink_quietly(tmp)
        raise
    for _final, backup in done:
        if backup is not None:
            _unlink_quietly(backup)
    if pairs:
        _fsync_dir(pairs[0][1].parent)


# --- rendering ------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    """Serialise what whisper results and meta may hold: numpy scalars/arrays, datetimes, paths."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _json_document(result: dict, meta: dict) -> dict:
    clash = _RESERVED_JSON_KEYS & set(meta)
    if clash:
        raise ValueError(f"meta must not override transcript keys: {sorted(clash)}")
    segments = []
    for seg in result.get("segments", []):
        item = {key: seg.get(key) for key in _SEGMENT_KEYS}
        if "speaker" in seg:
            item["speaker"] = seg["speaker"]
        if seg.get("words"):
            item["words"] = seg["words"]
        segments.append(item)
    doc = {
        "text": result.get("text", ""),
        "segments": segments,
        "language": result.get("language"),
        **meta,
    }
    doc.setdefault("created_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return doc


def _render(fmt: str, result: dict, meta: dict, fh: TextIO) -> None:
    """Write one format to an open text file (whisper's writers for all but json)."""
    if fmt == "json":
        json.dump(_json_document(result, meta), fh, ensure_ascii=False, indent=2,
                  default=_json_default)
        fh.write("\n")
        return
    # Imported here: whisper pulls in torch (~2 s, ~300 MB), which the parent process (error
    # reports, CLI) never needs; only the worker writes transcripts.
    from whisper.utils import WriteSRT, WriteTSV, WriteTXT, WriteVTT

    if any("speaker" in seg for seg in result.get("segments", [])):
        if fmt == "txt":
            fh.write(speaker_text(result))
            return
        result = _with_voices(result, fmt)
    writers = {"txt": WriteTXT, "srt": WriteSRT, "vtt": WriteVTT, "tsv": WriteTSV}
    writer = writers[fmt](".")  # output_dir is unused: we pass the file handle
    writer.write_result(result, file=fh, options=dict(WRITER_OPTIONS))


def speaker_text(result: dict) -> str:
    """One line per turn, `[Speaker 1] …` (consecutive segments of one speaker joined)."""
    lines: list[list[str]] = []
    last = None
    for seg in result.get("segments", []):
        text = seg.get("text", "")
        if not text.strip():
            continue
        if seg.get("speaker") != last or not lines:
            last = seg.get("speaker")
            lines.append([f"[{last}] ", text.strip()])
        else:
            lines[-1].append(text if text[:1].isspace() or not lines[-1][-1][-1:].isascii()
                             else " " + text)
    return "".join("".join(parts).rstrip() + "\n" for parts in lines)


def _with_voices(result: dict, fmt: str) -> dict:
    """A copy whose segment texts carry the speaker: WebVTT voice tags `<v Speaker 1>` (SRT
    players show or ignore them the same way), `[Speaker 1]` in the tsv's text column.
    Without words: whisper's writers would rebuild each cue from its words and drop the tag."""
    segments = []
    for seg in result.get("segments", []):
        who = seg.get("speaker")
        text = seg.get("text", "").strip()
        if who is not None:
            text = f"[{who}] {text}" if fmt == "tsv" else f"<v {who}>{text}"
        segments.append({**{k: v for k, v in seg.items() if k != "words"}, "text": text})
    return {**result, "segments": segments}


def _check_formats(formats: Sequence[str]) -> list[str]:
    unique = list(dict.fromkeys(f.lower().lstrip(".") for f in formats))
    unknown = [f for f in unique if f not in OUTPUT_FORMATS]
    if unknown:
        raise ValueError(f"unknown output format(s) {unknown}; choose from {OUTPUT_FORMATS}")
    if not unique:
        raise ValueError("no output formats requested")
    return unique


def write_transcripts(
    result: dict, out_dir: Path, stem: str, formats: Sequence[str], meta: dict
) -> list[Path]:
    """Write ``<stem>.<fmt>`` for each format into ``out_dir``, all or nothing.

    ``result`` is openai-whisper's ``transcribe()`` dict. Every format is rendered and fsynced
    to a temp file before any is renamed into place, so a failure (in any writer, a full disk)
    leaves the previous set exactly as it was and no temp behind. Re-running replaces the
    same files. Formats not requested this time are left alone. (The parent removes a stale
    ``<file name>.error.txt`` when it settles the success: outcome.settle.)
    """
    fmts = _check_formats(formats)
    _check_stem(stem)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs: list[tuple[Path, Path]] = []
    try:
        for fmt in fmts:
            name = f"{stem}.{fmt}"
            tmp = _write_temp(out_dir, name, lambda fh, fmt=fmt: _render(fmt, result, meta, fh))
            pairs.append((tmp, out_dir / name))
    except BaseException:
        for tmp, _final in pairs:
            _unlink_quietly(tmp)
        raise
    _commit(pairs)
    written = [final for _tmp, final in pairs]
    log.info("wrote %s", ", ".join(p.name for p in written))
    return written


# --- error reports --------------------------------------------------------------------------


def _local_time(when: datetime) -> str:
    """Show the user's local time with its offset; naive datetimes are UTC (the DB's clock)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    local = when.astimezone()
    offset = local.strftime("%z")
    offset = f"UTC{offset[:3]}:{offset[3:]}" if offset else "UTC"
    return f"{local:%Y-%m-%d %H:%M:%S} ({offset})"


def write_error_report(
    out_dir: Path,
    stem: str,
    *,
    source_name: str,
    message: str,
    attempts: int,
    when: datetime,
    hint: str | None = None,
    moved_to: str | None = None,
    kept_at: str | None = None,
    gone: bool = False,
    task_id: int | None = None,
    lang: str = "en",
) -> Path:
    """Write ``<stem>.error.txt``: which file, what went wrong, what to do next, in plain words
    of ``lang`` (``message`` and ``hint`` already in it: see i18n.reason).

    ``moved_to`` is where the source went (e.g. ``failed/team/talk.mp3``); it defaults to the
    failed folder in general terms. ``kept_at``: the source could not be moved and is still
    there (task ``task_id`` can be retried); ``gone``: it had left the inbox before it could be
    moved. A report never says a file went somewhere it did not.
    """
    from . import i18n

    _check_stem(stem)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tries = (i18n.t("report.one_try", lang) if attempts == 1
             else i18n.t("report.n_tries", lang, n=attempts))
    if kept_at is not None:
        next_step = i18n.t("report.next_kept", lang, path=kept_at, id=task_id or "ID")
    elif gone:
        next_step = i18n.t("report.next_gone", lang)
    else:
        next_step = i18n.t("report.next", lang, where=(
            i18n.t("report.moved_to", lang, path=moved_to) if moved_to
            else i18n.t("report.to_failed", lang)))
    lines = [
        i18n.t("report.title", lang, file=source_name),
        "",
        i18n.t("report.what", lang, reason=message.strip()),
        i18n.t("report.tries", lang, tries=tries, when=_local_time(when)),
        "",
        next_step,
    ]
    if hint:
        lines.append(i18n.t("report.hint", lang, hint=hint.strip()))
    text = "\n".join(lines) + "\n"
    final = out_dir / f"{stem}.error.txt"
    tmp = _write_temp(out_dir, final.name, lambda fh: fh.write(text))
    _commit([(tmp, final)])
    return final


def write_text(out_dir: Path, name: str, text: str) -> Path:
    """One more text file beside the transcripts (the minutes, their error report), atomically:
    a reader sees the old file or the whole new one."""
    _check_stem(name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / name
    tmp = _write_temp(out_dir, name, lambda fh: fh.write(text))
    _commit([(tmp, final)])
    return final


# --- one set of names per task ---------------------------------------------------------------


def transcript_stem(out_dir: Path, stem: str, taken: Collection[str] = ()) -> str:
    """The name a task's transcripts get: the source's stem made safe for Windows readers
    (fsops.windows_safe_name, on every platform), or ``stem (2)``, ``stem (3)`` … when another
    file's transcripts already use it in any letter case (fsops.free_stem).

    ``talk.mp3`` and ``talk.wav`` in one folder, or the same recorder name dropped again next
    week, must not overwrite each other's transcripts; nor may ``Talk.wav`` and ``talk.wav``
    (one file on NTFS). ``taken`` are stems other running tasks have been given but not written
    yet. An ``.error.txt`` alone does not take a name: after a failure the user fixes the file
    and drops it again, and its transcript belongs there.
    """
    _check_stem(stem)
    stem = fsops.windows_safe_name(fit_name(stem, len(" (9999).error.txt")))
    return fsops.free_stem(out_dir, stem, [f".{fmt}" for fmt in OUTPUT_FORMATS], taken)


def remove_partial(out_dir: Path, stem: str) -> int:
    """Delete the temp files a killed worker left while writing ``<stem>.*``; returns how many.

    Only our temp names for this stem's outputs (every format and the error report) match, so
    finished transcripts and other tasks' files are never touched.
    """
    prefixes = {_temp_prefix(f"{stem}.{fmt}")
                for fmt in (*OUTPUT_FORMATS, "error.txt", "minutes.md", "minutes.error.txt")}
    removed = 0
    try:
        names = os.listdir(out_dir)
    except OSError:
        return 0
    for name in names:
        if is_temp_name(name) and name[:-_TEMP_TAIL] in prefixes:
            try:
                os.unlink(Path(out_dir) / name)
            except OSError as exc:
                log.warning("could not remove partial output %s: %s", name, exc)
                continue
            removed += 1
            log.info("removed partial output %s", Path(out_dir) / name)
    return removed


# --- crash leftovers ------------------------------------------------------------------------


def is_temp_name(name: str) -> bool:
    """True for names this module gives its temp files (and only those)."""
    return bool(_TEMP_RE.match(name))


def remove_temp_leftovers(out_dir_root: Path, max_age_minutes: float = 60.0) -> int:
    """Delete our own temp files older than ``max_age_minutes`` under ``out_dir_root``.

    They are left only when a writer process died mid-write. Younger ones may belong to a
    writer still running, and anything not named like our temps is never touched (nor are
    symlinks followed).
    """
    root = Path(out_dir_root)
    cutoff = time.time() - max_age_minutes * 60.0
    removed = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            if not is_temp_name(name):
                continue
            path = Path(dirpath) / name
            try:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode) or st.st_mtime > cutoff:
                    continue
                os.unlink(path)
            except OSError as exc:
                log.debug("leaving %s: %s", path, exc)
                continue
            removed += 1
            log.info("removed leftover temp file %s", path)
    return removed


__all__ = [
    "OUTPUT_FORMATS",
    "UnsafePathError",
    "is_temp_name",
    "output_dir_for",
    "remove_partial",
    "remove_temp_leftovers",
    "speaker_text",
    "transcript_stem",
    "write_error_report",
    "write_text",
    "write_transcripts",
]
