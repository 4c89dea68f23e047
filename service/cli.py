"""Command line (DESIGN.md §6). Thin: each command calls the module that owns the logic.

python app.py [--settings PATH] [run]
python app.py status [--json]
python app.py tasks [--status S] [--limit N]
python app.py retry ID | cancel ID
python app.py minutes ID          (make a completed task's minutes again)
python app.py sql "SELECT …"
python app.py models list | models import SRC --name NAME
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from . import catalog, db, winservice
from .config import Settings, SettingsError, load_settings
from .fsops import display
from .runner import HEARTBEAT_SECONDS, heartbeat_path, run_foreground
from .tasks import TaskQueue

log = logging.getLogger("dropscribe")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="app.py", description="DropScribe transcription service")
    p.add_argument("--settings", type=Path, default=None,
                   help="settings file (default: settings.yaml next to app.py)")
    sub = p.add_subparsers(dest="command")
    sub.add_parser("run", help="run the service in the foreground (default)")
    st = sub.add_parser("status", help="queue, GPUs and running tasks")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    t = sub.add_parser("tasks", help="task history")
    t.add_argument("--status", default=None)
    t.add_argument("--limit", type=int, default=20)
    for name in ("retry", "cancel"):
        c = sub.add_parser(name, help=f"{name} a task")
        c.add_argument("id", type=int)
    mn = sub.add_parser("minutes", help="make a completed task's minutes again (summary:)")
    mn.add_argument("id", type=int)
    q = sub.add_parser("sql", help="read-only SQL query, printed as a table")
    q.add_argument("query")
    m = sub.add_parser("models", help="list or import Whisper models")
    msub = m.add_subparsers(dest="models_command", required=True)
    msub.add_parser("list")
    imp = msub.add_parser("import", help="convert a CTranslate2/Hugging Face Whisper model")
    imp.add_argument("src", type=Path)
    imp.add_argument("--name", required=True)
    winservice.add_parser(sub)
    return p


def _console_never_fails() -> None:
    """A Windows console in cp936 or cp1252 cannot show every file name: write what it cannot
    as escapes (``\\u4f1a``) instead of dying with UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # a stream that cannot be reconfigured: leave it
                pass


def main(argv: Sequence[str] | None = None) -> int:
    """The commands, safe for any console: `status | head` ends quietly when the reader
    closes the pipe (BrokenPipeError), and unencodable characters are escaped."""
    _console_never_fails()
    try:
        code = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not at exit
        return code
    except BrokenPipeError:
        # The reader has gone: nothing more can be shown. Point stdout at devnull so the
        # interpreter's final flush does not raise again (Python's documented idiom).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.settings)
    except SettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    command = args.command or "run"
    handler = {
        "run": cmd_run, "status": cmd_status, "tasks": cmd_tasks, "retry": cmd_retry,
        "cancel": cmd_cancel, "minutes": cmd_minutes, "sql": cmd_sql, "models": cmd_models,
        "service": winservice.run,
    }[command]
    try:
        return handler(settings, args)
    except SQLAlchemyError as err:
        print(f"error: database problem: {getattr(err, 'orig', None) or err}", file=sys.stderr)
        return 1


# ---- run ----------------------------------------------------------------------------------
def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    return run_foreground(settings)


# ---- reading commands ---------------------------------------------------------------------
def _queue(settings: Settings) -> TaskQueue:
    url = settings.database_url
    path = settings.sqlite_path
    if path is not None and not path.exists():
        db.migrate(url)  # a fresh install: create the empty database instead of failing
    return TaskQueue(db.make_engine(url))


def _service_state(settings: Settings) -> dict | None:
    """The heartbeat the running service writes, or None if it is not running."""
    try:
        data = json.loads(heartbeat_path(settings).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if time.time() - data.get("heartbeat", 0) > 3 * HEARTBEAT_SECONDS:
        return None
    return data


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from . import status

    data = status.collect(settings, _queue(settings), _service_state(settings))
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return 0
    print(status.render_text(data, settings.ui_language))
    return 0


def cmd_tasks(settings: Settings, args: argparse.Namespace) -> int:
    rows = [
        (t.id, t.status, t.model, t.attempts, t.created_at.strftime("%Y-%m-%d %H:%M:%S"),
         f"{t.progress * 100:.0f}%", t.source, t.error_message or "")
        for t in _queue(settings).list(status=args.status, limit=args.limit)
    ]
    _print_table(["id", "status", "model", "tries", "created (UTC)", "progress", "file", "error"],
                 rows)
    return 0


def cmd_sql(settings: Settings, args: argparse.Namespace) -> int:
    url = settings.database_url
    if settings.sqlite_path is not None and not settings.sqlite_path.exists():
        print(f"error: no database yet at {settings.sqlite_path}", file=sys.stderr)
        return 1
    engine = db.make_engine(url, readonly=True)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SET TRANSACTION READ ONLY"))
            result = conn.execute(text(args.query))
            if not result.returns_rows:
                print("(no rows)")
                return 0
            _print_table(list(result.keys()), [tuple(r) for r in result])
    except SQLAlchemyError as err:
        msg = getattr(err, "orig", err)
        print(f"error: {msg}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0


# ---- changing commands ----------------------------------------------------------------------
def cmd_retry(settings: Settings, args: argparse.Namespace) -> int:
    from . import actions, i18n

    queue = _queue(settings)
    try:
        actions.retry(settings, queue, args.id)
    except actions.ActionError as err:
        lang = settings.ui_language
        print(f"error: {display(i18n.t(err.key, lang, **err.fields(lang)))}", file=sys.stderr)
        return 1
    print(f"task {args.id} will run again: {display(queue.get(args.id).source)}")
    return 0


def cmd_minutes(settings: Settings, args: argparse.Namespace) -> int:
    from . import i18n
    from .minutes import Minutes

    queue = _queue(settings)
    lang = settings.ui_language
    if not Minutes(settings, queue, queue.clock, "cli").retry(args.id):
        print(f"error: {i18n.t('minutes.not_found', lang, id=args.id)}", file=sys.stderr)
        return 1
    print(i18n.t("minutes.retried", lang, id=args.id))
    return 0


def cmd_cancel(settings: Settings, args: argparse.Namespace) -> int:
    task = _queue(settings).cancel(args.id)
    if task is None:
        print(f"error: task {args.id} does not exist or has already finished", file=sys.stderr)
        return 1
    print(f"task {args.id} cancelled; the file stays in the inbox: {task.source}")
    return 0


def cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    from . import model_import

    models_dir = settings.models_dir
    if args.models_command == "list":
        engines = catalog.local_engines(models_dir)
        print(f"models in {models_dir}:")
        if not engines:
            print("  (none) — official models are downloaded here on first use when online, or "
                  "import one with: python app.py models import <folder> --name <name>")
        checkpoints = {info["name"]: info for info in model_import.list_models(models_dir)}
        for name, runs in engines.items():
            info = checkpoints.get(name, {})
            size = info.get("size_mb") or _folder_mb(models_dir / name)
            print(f"  {name:<20} {size:>8.1f} MB  {', '.join(runs):<31} {info.get('dims') or ''}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    name = args.name
    if not name or any(c in name for c in "/\\:") or name.startswith("."):
        print("error: --name must be a plain name like 'small' or 'large-v3'", file=sys.stderr)
        return 2
    models_dir.mkdir(parents=True, exist_ok=True)
    try:
        dest = model_import.import_model(args.src, models_dir / f"{name}.pt")
    except model_import.ModelImportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"imported {args.src} as {dest} ({os.path.getsize(dest) / 1e6:.1f} MB)")
    return 0


def _folder_mb(folder: Path) -> float:
    """Size of a CTranslate2 model folder's files."""
    try:
        return round(sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 2**20, 1)
    except OSError:
        return 0.0


# ---- output -------------------------------------------------------------------------------------
def _width(s: str) -> int:
    """Display width: CJK characters take two columns in a terminal."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def _print_table(headers: list[str], rows: list[tuple]) -> None:
    # Control characters escaped: a file name must not send terminal escapes or break rows.
    cells = [["" if v is None else display(str(v)) for v in row] for row in rows]
    widths = [_width(h) for h in headers]
    for row in cells:
        for i, v in enumerate(row):
            widths[i] = min(max(widths[i], _width(v)), 80)

    def line(values: list[str]) -> str:
        return "  ".join(v + " " * max(0, widths[i] - _width(v)) for i, v in enumerate(values))

    print(line(headers).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(line(row).rstrip())
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
