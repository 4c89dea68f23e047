"""Failure details in the user's language.

A task row keeps the English detail its failure was recorded with (the worker, the dispatcher,
the watcher, audio, engine, fsops and sidecar modules write it). Shown in Chinese, that detail is
recognised and said again: our own sentences by their English template in i18n ("detail.*",
whose fields match any text), operating-system errors by their errno (file not found,
permission denied, sharing violation, disk full, name too long …), FFmpeg's and JSON's words by
their phrase. Only what is none of these — an error nobody foresaw — stays in its own words,
labelled "详细信息：", so nothing specific is lost. English is shown as recorded.
"""

from __future__ import annotations

import errno
import re
from functools import cache, lru_cache
from string import Formatter

from . import i18n

# i18n keys of our own sentences, the most specific first (fullmatch decides; a sentence that
# wraps another — the note of a source that could not be moved — comes first).
TEMPLATES = (
    "detail.not_moved", "detail.unexpected", "detail.io", "detail.refused",
    "detail.cannot_write", "detail.bad_options", "detail.oom", "detail.crashed",
    "detail.timeout", "detail.interrupted", "detail.worker_start", "detail.stuck",
    "engine.cuda_library", "detail.cuda_missing", "detail.cuda_locate", "detail.cuda_any",
    "detail.too_long",
    "detail.empty", "detail.directory", "detail.not_file", "detail.missing",
    "detail.permission", "detail.not_media", "detail.no_audio_video", "detail.no_audio",
    "detail.no_audio_data", "detail.damaged_like", "detail.damaged", "detail.unreadable",
    "detail.model_not_in", "detail.not_a_model", "detail.model_file_bad",
    "detail.fw_not_a_model", "detail.fw_lacks", "detail.fw_bad", "detail.fw_not_in",
    "detail.fw_download", "detail.download_off", "detail.download_failed",
    "detail.outside_link", "detail.outside", "detail.absolute", "detail.dotdot",
    "detail.unsafe_name", "detail.windows_path", "detail.name_bytes", "detail.path_bytes",
    "detail.sidecar_link", "detail.sidecar_large", "detail.sidecar_utf8",
    "detail.sidecar_read", "detail.sidecar_json", "detail.sidecar_deep",
    "detail.sidecar_object", "detail.sidecar_model", "detail.sidecar_invalid",
    "detail.engine_choice", "detail.engine_only", "detail.engine_missing",
)
NESTED = frozenset({"error", "message"})  # fields that are details themselves: said again
# fields with a shape of their own: " (why)" or nothing, right after another field
_FIELD_PATTERNS = {"why": r"(?: \(.+\))?"}

_OS_ERROR = re.compile(r"\[(?P<tag>Errno|WinError) (?P<code>-?\d+)\] (?P<text>.+?)"
                       r"(?:: (?P<path>'.*'|\".*\"))?(?: -> (?P<path2>'.*'|\".*\"))?", re.S)
_ERRNO = {
    "not_found": ("ENOENT",), "permission": ("EACCES", "EPERM"),
    "in_use": ("EBUSY", "ETXTBSY"), "disk_full": ("ENOSPC", "EDQUOT"), "too_big": ("EFBIG",),
    "name_too_long": ("ENAMETOOLONG",), "read_only": ("EROFS",), "io": ("EIO",),
    "exists": ("EEXIST",), "is_dir": ("EISDIR",), "not_dir": ("ENOTDIR",),
    "no_memory": ("ENOMEM",), "stale": ("ESTALE",),
}
_WINERROR = {2: "not_found", 3: "not_found", 5: "permission", 32: "in_use", 33: "in_use",
             39: "disk_full", 112: "disk_full", 206: "name_too_long", 19: "read_only",
             23: "io", 80: "exists", 183: "exists", 267: "not_dir", 8: "no_memory"}
# the words themselves (a strerror without its number, FFmpeg's messages, JSON's), lower case
_PHRASES = {
    "the system cannot find the file specified": "oserr.not_found",
    "the system cannot find the path specified": "oserr.not_found",
    "access is denied": "oserr.permission",
    "the process cannot access the file because it is being used by another process":
        "oserr.in_use",
    "there is not enough space on the disk": "oserr.disk_full",
    "the filename or extension is too long": "oserr.name_too_long",
    "it is a link, not a file": "oserr.link",
    "it is not a regular file": "oserr.not_regular",
    "the file was replaced by a link": "oserr.replaced_by_link",
    "its folder was replaced by a link": "oserr.folder_link",
    "the copy is incomplete": "oserr.incomplete",
    "already exists": "oserr.exists",
    "invalid data found when processing input": "ffmpeg.invalid_data",
    "end of file": "ffmpeg.eof",
    "decoder not found": "ffmpeg.decoder",
    "demuxer not found": "ffmpeg.demuxer",
    "invalid argument": "ffmpeg.invalid_argument",
    "operation not permitted": "ffmpeg.not_permitted",
    "expecting value": "json.value",
    "expecting property name enclosed in double quotes": "json.name",
    "expecting ',' delimiter": "json.comma",
    "expecting ':' delimiter": "json.colon",
    "extra data": "json.extra",
    "unterminated string starting at": "json.string",
}
_FORMAT = re.compile(r"(?:an? )?(?P<name>.+?) (?P<what>audio|video|file)")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_CJK = re.compile(r"[\u3400-\u9fff\uff00-\uffef\u3000-\u303f]")


def reason(kind: str | None, message: str | None, lang: str | None = None) -> str:
    """A failure as the user reads it (`.error.txt`, `status`, the status page): in English the
    recorded message; in Chinese the reason for its kind, then its detail said in Chinese."""
    text = (message or "").strip()
    if i18n.normalize(lang) == i18n.DEFAULT:
        return text or i18n.t("reason.error", lang)
    known = kind and f"reason.{kind}" in i18n.MESSAGES[i18n.DEFAULT]
    said = i18n.t(f"reason.{kind}" if known else "reason.error", lang)
    return i18n.t("reason.with_detail", lang, reason=said, detail=detail(text, lang)) \
        if text else said


def detail(text: str, lang: str | None) -> str:
    """``text`` (one of the English details above) in ``lang``; unknown words labelled."""
    text = text.strip()
    if i18n.normalize(lang) == i18n.DEFAULT:
        return text
    said = _known(text, lang)
    if said is not None:
        return said
    if _CJK.search(_QUOTED.sub("", text)):  # recorded in Chinese already (the watcher's
        return text                         # reasons), not merely naming a Chinese file
    return i18n.t("detail.raw", lang, text=text)


def os_error(text: str, lang: str | None) -> str | None:
    """``[Errno 2] No such file or directory: 'x'`` → ``找不到文件或文件夹：'x'`` (None when
    the errno or the words are not ones we know)."""
    m = _OS_ERROR.fullmatch(text.strip())
    if m is None:
        return None
    what = _category(m["tag"], int(m["code"]), m["text"])
    if what is None:
        return None
    said = i18n.t(what, lang)
    paths = " -> ".join(p for p in (m["path"], m["path2"]) if p)
    return i18n.t("oserr.with_path", lang, what=said, path=paths) if paths else said


def _category(tag: str, code: int, words: str) -> str | None:
    if tag == "WinError" and code in _WINERROR:
        return f"oserr.{_WINERROR[code]}"
    if tag == "Errno":
        for name, codes in _ERRNO.items():
            if any(getattr(errno, c, None) == code for c in codes):
                return f"oserr.{name}"
    return _phrase(words)


@lru_cache(maxsize=1)
def _strerrors() -> dict[str, str]:
    """This platform's own strerror texts ("No such file or directory" …) → category key."""
    import os

    out = {}
    for name, codes in _ERRNO.items():
        for c in codes:
            if hasattr(errno, c):
                out[os.strerror(getattr(errno, c)).lower()] = f"oserr.{name}"
    return out


def _phrase(words: str) -> str | None:
    key = words.strip().rstrip(".").strip().lower()
    return _PHRASES.get(key) or _strerrors().get(key)


def _known(text: str, lang: str | None) -> str | None:
    for key in TEMPLATES:
        m = _pattern(key).fullmatch(text)
        if m is not None:
            return i18n.t(key, lang, **{k: _field(k, v, lang) for k, v in m.groupdict().items()})
    said = os_error(text, lang)
    if said is not None:
        return said
    phrase = _phrase(text)
    if phrase is not None:
        return i18n.t(phrase, lang)
    return None


def _field(name: str, value: str, lang: str | None) -> str:
    if name == "why":  # " (downloading is switched off)" → "（已关闭下载）"
        return f"（{detail(value[2:-1], lang)}）" if value else ""
    if name == "format":  # "an MP4/M4A/MOV file" → "MP4/M4A/MOV 文件"
        m = _FORMAT.fullmatch(value)
        return i18n.t(f"format.{m['what']}", lang, name=m["name"]) if m else value
    return detail(value, lang) if name in NESTED else value


@cache
def _pattern(key: str) -> re.Pattern[str]:
    """The English template of ``key`` as a regular expression: its fields match any text."""
    out, seen = [], set()
    for literal, field, _spec, _conv in Formatter().parse(i18n.MESSAGES[i18n.DEFAULT][key]):
        out.append(re.escape(literal))
        if field is None:
            continue
        if field in seen:
            out.append(f"(?P={field})")
        else:
            seen.add(field)
            out.append(f"(?P<{field}>{_FIELD_PATTERNS.get(field, '.+?')})")
    return re.compile("".join(out), re.S)
