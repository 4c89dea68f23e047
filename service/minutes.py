"""Meeting minutes (`<stem>.minutes.md`) from a finished transcript, by the user's own LLM server.

Run by the service, not the GPU worker, after the transcript is written, and never in the way of
transcription: its own state on the task row (`summary_status`: pending → running → done, or
back to pending with a doubling backoff, or failed after `summary.max_attempts`), its own
thread, its own error report (`<stem>.minutes.error.txt`). A transcript longer than the model's
context goes in parts (map: notes per part; reduce: the notes merged into the minutes, in
rounds if the notes are long too). The minutes are written in the transcript's language.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import unicodedata
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import and_, or_, select, update

from . import catalog, i18n, llm, outputs
from .clock import Clock
from .config import Settings
from .db import session_factory
from .tables import COMPLETED, Task
from .tasks import TaskQueue

log = logging.getLogger(__name__)

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
POLL_SECONDS = 2.0
MINUTES_SUFFIX = ".minutes.md"
ERROR_SUFFIX = ".minutes.error.txt"

__all__ = ["Minutes", "chunks", "estimate_tokens", "make_minutes", "transcript_lines",
           "wanted"]

Ask = Callable[[list[dict[str, str]]], str]


def wanted(settings: Settings) -> dict[str, Any]:
    """Fields a completed task gets when minutes are on (scheduler: in the same UPDATE as the
    completion, so a crash can never lose the request)."""
    if not settings.summary.enabled:
        return {}
    return {"summary_status": PENDING, "summary_attempts": 0, "summary_next_at": None,
            "summary_error": None, "summary_worker": None}


# --------------------------------------------------------------------------- text and prompts


def estimate_tokens(text: str) -> int:
    """A cautious token count without the model's tokenizer: a CJK character can be one or two
    tokens, English runs about four characters a token."""
    wide = sum(1 for ch in text if unicodedata.east_asian_width(ch) in "WF")
    return math.ceil(wide * 1.5 + (len(text) - wide) / 3.5)


def transcript_lines(out_dir: Path, stem: str) -> list[str]:
    """The transcript as lines, one per speaker turn when speakers are labelled: from the json
    (which always knows the speakers), else the txt."""
    doc = out_dir / f"{stem}.json"
    if doc.is_file():
        data = json.loads(doc.read_text(encoding="utf-8"))
        result = {"segments": data.get("segments") or []}
        if any("speaker" in s for s in result["segments"]):
            return outputs.speaker_text(result).splitlines()
        return [s.get("text", "").strip() for s in result["segments"] if s.get("text", "").strip()]
    txt = out_dir / f"{stem}.txt"
    if txt.is_file():
        return [line for line in txt.read_text(encoding="utf-8").splitlines() if line.strip()]
    raise FileNotFoundError(f"{stem}.json / {stem}.txt")


def chunks(lines: list[str], budget: int) -> list[str]:
    """Consecutive lines joined into parts of at most `budget` tokens (a line too long for one
    part is cut into pieces)."""
    parts: list[list[str]] = [[]]
    used = 0
    for line in lines:
        pieces = [line]
        if estimate_tokens(line) > budget:
            step = max(1, int(len(line) * budget / estimate_tokens(line)))
            pieces = [line[i:i + step] for i in range(0, len(line), step)]
        for piece in pieces:
            cost = estimate_tokens(piece) + 1
            if parts[-1] and used + cost > budget:
                parts.append([])
                used = 0
            parts[-1].append(piece)
            used += cost
    return ["\n".join(p) for p in parts if p]


def _language_name(code: str) -> str:
    """'zh' → 'Chinese' (whisper's own table: the first name given for a code)."""
    _codes, names = catalog.whisper_languages()
    return next((name.title() for name, c in names.items() if c == code), code)


def _prompt(key: str, lang: str, **kw: Any) -> str:
    """Prompts are in Chinese for Chinese transcripts (the model then answers in Chinese)."""
    if lang == "zh" and "language" in kw:
        kw["language"] = "简体中文"
    return i18n.t(key, "zh-CN" if lang == "zh" else "en", **kw)


def make_minutes(lines: list[str], language: str, ask: Ask, context_tokens: int,
                 system: str | None = None) -> str:
    """The minutes' Markdown for the transcript `lines` in `language` (a code: zh, en, …).

    `ask` sends chat messages and returns the reply; `system` replaces our instructions for
    the final minutes (summary.prompt_file).
    """
    name = _language_name(language)
    final = system or _prompt("minutes.prompt", language, language=name)
    notes_prompt = _prompt("minutes.prompt_part", language, language=name, i=99, n=99)
    reply_tokens = max(256, min(2048, context_tokens // 4))
    budget = context_tokens - reply_tokens - estimate_tokens(final + notes_prompt) - 200
    if budget < 200:
        raise ValueError("summary.context_tokens is too small for the instructions")
    parts = chunks(lines, budget)
    if len(parts) == 1:
        return ask([{"role": "system", "content": final}, {"role": "user", "content": parts[0]}])
    notes = [ask([{"role": "system", "content": _prompt(
                      "minutes.prompt_part", language, language=name, i=i, n=len(parts))},
                  {"role": "user", "content": part}]) for i, part in enumerate(parts, 1)]
    merge = _prompt("minutes.prompt_merge", language, language=name)
    while True:  # reduce: merge the notes, in rounds while they do not fit one request
        groups = chunks(notes, budget - estimate_tokens(merge))
        if len(groups) == 1:
            return ask([{"role": "system", "content": f"{final}\n\n{merge}"},
                        {"role": "user", "content": groups[0]}])
        if len(groups) >= len(notes):
            raise ValueError("the notes of one part do not fit summary.context_tokens")
        notes = [ask([{"role": "system", "content": merge},
                      {"role": "user", "content": g}]) for g in groups]


# --------------------------------------------------------------------------- the service part


class Minutes:
    """The minutes' queue: a thread that takes due tasks one at a time (on any node)."""

    def __init__(self, settings: Settings, queue: TaskQueue, clock: Clock, worker_id: str,
                 ask: Ask | None = None) -> None:
        self.settings = settings
        self.queue = queue
        self.clock = clock
        self.worker_id = worker_id
        self.lang = settings.ui_language
        self._sessions = session_factory(queue.engine)
        self._ask = ask or self._chat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._current: int | None = None

    # ---- the thread ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="minutes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop at once; a request still waiting for the server is handed back (pending)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._current is not None:
            self._release(self._current)

    def _loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                while not self._stop.is_set() and self.run_once():
                    pass
            except Exception:  # noqa: BLE001 - the thread must outlive any one failure
                log.exception("minutes: unexpected error")

    def retry(self, task_id: int) -> bool:
        """Make a completed task's minutes again (`python app.py minutes ID`)."""
        with self._sessions.begin() as s:
            res = s.execute(update(Task).where(
                Task.id == task_id, Task.status == COMPLETED,
                or_(Task.summary_status.is_(None), Task.summary_status != RUNNING))
                .values(summary_status=PENDING, summary_attempts=0, summary_next_at=None,
                        summary_error=None, summary_worker=None))
            return bool(res.rowcount)

    # ---- one task ----------------------------------------------------------------------------
    def _due(self, now: datetime) -> Any:
        pending = and_(Task.summary_status == PENDING,
                       or_(Task.summary_next_at.is_(None), Task.summary_next_at <= now))
        lapsed = and_(Task.summary_status == RUNNING, Task.summary_next_at <= now)
        return and_(Task.status == COMPLETED, or_(pending, lapsed))

    def _lease(self) -> timedelta:
        return timedelta(seconds=self.settings.summary.timeout_seconds + 60)

    def claim(self) -> Task | None:
        """The oldest due task, now `running` for this node (None: nothing due)."""
        now = self.clock.now()
        with self._sessions.begin() as s:
            ids = s.execute(select(Task.id).where(self._due(now)).order_by(Task.finished_at)
                            .limit(5)).scalars().all()
        for task_id in ids:
            with self._sessions.begin() as s:
                row = s.execute(
                    update(Task).where(Task.id == task_id, self._due(now))
                    .values(summary_status=RUNNING, summary_worker=self.worker_id,
                            summary_next_at=now + self._lease(),
                            summary_attempts=Task.summary_attempts + 1)
                    .returning(Task)).scalar_one_or_none()
                if row is not None:
                    s.expunge(row)
                    return row
        return None

    def _set(self, task_id: int, **values: Any) -> bool:
        with self._sessions.begin() as s:
            res = s.execute(update(Task).where(
                Task.id == task_id, Task.summary_status == RUNNING,
                Task.summary_worker == self.worker_id).values(**values))
            return bool(res.rowcount)

    def _release(self, task_id: int) -> None:
        self._set(task_id, summary_status=PENDING, summary_next_at=None,
                  summary_attempts=Task.summary_attempts - 1)

    def _renew(self, task_id: int) -> None:
        self._set(task_id, summary_next_at=self.clock.now() + self._lease())

    def run_once(self) -> bool:
        """Make the minutes of one due task; False when none was due."""
        task = self.claim()
        if task is None:
            return False
        self._current = task.id
        try:
            self._make(task)
        finally:
            self._current = None
        return True

    def _chat(self, messages: list[dict[str, str]]) -> str:
        cfg = self.settings.summary
        if self._current is not None:
            self._renew(self._current)
        key = cfg.api_key.get_secret_value() if cfg.api_key else None
        return llm.chat(cfg.url, cfg.model or "", messages, api_key=key,
                        timeout=cfg.timeout_seconds,
                        max_tokens=max(256, min(2048, cfg.context_tokens // 4)))

    def _language(self, task: Task) -> str:
        chosen = self.settings.summary.language
        if chosen != "auto":
            return chosen
        if task.task == "translate":  # the transcript is English whatever was spoken
            return "en"
        return task.detected_language or task.language or "en"

    def _make(self, task: Task) -> None:
        rel = PurePosixPath(task.source)
        out_dir = outputs.output_dir_for(self.settings.outbox, rel)
        stem = task.output_stem
        lang = self._language(task)
        try:
            lines = transcript_lines(out_dir, stem)
            system = None
            if (path := self.settings.summary_prompt_file) is not None:
                system = path.read_text(encoding="utf-8-sig").strip() or None
            if not lines:
                text = i18n.t("minutes.empty", self.lang)
            else:
                text = make_minutes(lines, lang, self._ask, self.settings.summary.context_tokens,
                                    system)
            title = i18n.t("minutes.title", "zh-CN" if lang == "zh" else "en", file=rel.name)
            outputs.write_text(out_dir, f"{stem}{MINUTES_SUFFIX}", f"# {title}\n\n{text}\n")
        except llm.ChatError as err:
            self._failed(task, err.message(self.lang), out_dir, stem)
            return
        except FileNotFoundError as err:  # deleted, or neither txt nor json was written:
            self._failed(task, i18n.t("minutes.no_transcript", self.lang, files=err,  # a retry
                                      folder=out_dir), out_dir, stem, final=True)  # won't help
            return
        except (OSError, ValueError) as err:  # no transcript, unreadable prompt, full disk
            self._failed(task, i18n.t("minutes.local_error", self.lang, error=err), out_dir,
                         stem)
            return
        if self._set(task.id, summary_status=DONE, summary_next_at=None, summary_error=None):
            log.info("task %s: minutes written (%s%s)", task.id, stem, MINUTES_SUFFIX)
            stale = out_dir / f"{stem}{ERROR_SUFFIX}"
            if stale.is_file():
                stale.unlink()

    def _failed(self, task: Task, reason: str, out_dir: Path, stem: str,
                final: bool = False) -> None:
        cfg = self.settings.summary
        attempts = task.summary_attempts
        if attempts < cfg.max_attempts and not final:
            wait = cfg.backoff_seconds * 2 ** (attempts - 1)
            self._set(task.id, summary_status=PENDING, summary_error=reason,
                      summary_next_at=self.clock.now() + timedelta(seconds=wait))
            log.warning("task %s: minutes attempt %d failed, next try in %.0f s: %s", task.id,
                        attempts, wait, reason)
            return
        self._set(task.id, summary_status=FAILED, summary_error=reason, summary_next_at=None)
        log.error("task %s: %s", task.id, i18n.t("minutes.gave_up", "en", attempts=attempts,
                                                   error=reason))
        report = "\n".join([
            i18n.t("minutes.report_head", self.lang, file=task.source),
            "",
            i18n.t("minutes.report_reason", self.lang, error=reason),
            i18n.t("minutes.report_tries", self.lang, attempts=attempts),
            "",
            i18n.t("minutes.report_next", self.lang, id=task.id),
        ]) + "\n"
        try:
            outputs.write_text(out_dir, f"{stem}{ERROR_SUFFIX}", report)
        except (OSError, ValueError) as err:
            log.error("task %s: could not write the minutes' error report: %s", task.id, err)
