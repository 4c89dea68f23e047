"""Logging: a rotating UTF-8 file under paths.logs, plus the console in the foreground."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

from .fsops import display

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class EscapeArgs(logging.Filter):
    """File names reach the log as arguments: escape their control characters (a newline
    would forge a log line, ESC sequences would drive the terminal) and undecodable bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(_escaped(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _escaped(v) for k, v in record.args.items()}
        return True


def _escaped(value: object) -> object:
    if isinstance(value, str):
        return display(value)
    if isinstance(value, os.PathLike):
        return display(os.fspath(value)) if isinstance(os.fspath(value), str) else value
    return value


def setup(log_dir: Path, *, console: bool = True, level: int = logging.INFO) -> Path:
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "dropscribe.log"
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        if getattr(h, "_dropscribe", False):
            root.removeHandler(h)
    handlers: list[logging.Handler] = [
        logging.handlers.RotatingFileHandler(
            path, maxBytes=5 * 1024 * 1024, backupCount=5, encoding="utf-8",
            errors="backslashreplace",  # a traceback naming an undecodable file still logs
        )
    ]
    if console:
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(logging.Formatter(FORMAT))
        h.addFilter(EscapeArgs())
        h._dropscribe = True  # type: ignore[attr-defined]
        root.addHandler(h)
    for noisy in ("apscheduler", "watchdog", "alembic", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return path
