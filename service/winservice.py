"""Run DropScribe as a Windows service (pywin32) or a systemd unit (Linux).

    python app.py [--settings PATH] service install [--startup auto|manual] [--user U --password P]
    python app.py [--settings PATH] service remove | start | stop | debug
    (Linux: add --system for /etc/systemd/system instead of a user unit)

Both run the same loop as ``python app.py`` (``runner.Service.run_forever``); a stop requeues the
running tasks without spending an attempt.

Windows pitfalls (handled at install; run it from an Administrator prompt, with the interpreter
that runs DropScribe):

* A service starts in ``C:\\Windows\\System32`` as LocalSystem, with no console and the *system*
  PATH. ``install`` stores the interpreter (``sys.executable``) and the absolute settings path in
  ``HKLM\\SYSTEM\\CurrentControlSet\\Services\\DropScribe\\Parameters``; the service reads them
  there. Use UNC paths (``\\\\server\\share``), not mapped drive letters, in settings.yaml.
* Error 1053 ("did not respond in a timely fashion") almost always means ``pythonservice.exe``
  could not load ``python3X.dll`` or ``pywintypes3X.dll`` (venv, conda, per-user Python).
  ``install`` registers a ``pythonservice.exe`` copied into the environment's root
  (``sys.exec_prefix``, where a venv's ``pyvenv.cfg`` is found), gives the service a PATH with
  the environment's DLL folders (conda: ``Library\\bin``, ``DLLs``; venv: the base Python) before
  the system PATH, and prints the exact ``copy`` command for a DLL that is neither next to
  ``pythonservice.exe`` nor on the system PATH. Run ``install`` again after moving or updating
  the environment.
* Workers are started with the recorded interpreter (``multiprocessing.set_executable``), never
  with ``pythonservice.exe``.
* ``service debug`` runs ``pythonservice.exe -debug DropScribe`` in the console: the same DLL
  loading as the real service, with its errors printed (Ctrl-C stops it cleanly).
* Failure recovery: restart after 10 s, 60 s, 60 s; the failure count resets after a day.

Linux: ``install`` writes ``~/.config/systemd/user/dropscribe.service`` (``--system``:
``/etc/systemd/system/dropscribe.service``; ``DROPSCRIBE_SYSTEMD_DIR`` overrides the folder) and
prints the ``systemctl`` commands. KillSignal=SIGINT is the clean stop; KillMode=mixed sends it to
the main process only, which stops its workers itself.
"""

from __future__ import annotations

import argparse
import getpass
import importlib
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from . import logs, runner
from .config import Settings, load_settings
from .runner import Service

log = logging.getLogger(__name__)

SERVICE_NAME = "DropScribe"
DISPLAY_NAME = "DropScribe transcription service"
DESCRIPTION = (
    "Watch-folder transcription: audio and video copied into the inbox folder become "
    "transcripts in the outbox folder (openai-whisper)."
)
CLASS_PATH = "service.winservice.DropScribeService"
OPT_PYTHON = "python"  # registry Parameters values written at install time
OPT_SETTINGS = "settings"
STOP_WAIT_HINT_MS = 30_000  # what SvcStop promises the SCM per STOP_PENDING report
# Windows gives SHUTDOWN only ~5–20 s; PRESHUTDOWN comes first and waits up to this long.
PRESHUTDOWN_TIMEOUT_MS = 60_000
SERVICE_ACCEPT_PRESHUTDOWN = 0x100  # winsvc.h (pywin32 names it too; fakes may not)
SERVICE_CONTROL_PRESHUTDOWN = 0x0F
SERVICE_CONFIG_PRESHUTDOWN_INFO = 7
STOP_REPORT_SECONDS = 5.0  # while stopping, report STOP_PENDING this often …
STOP_REPORT_LIMIT_SECONDS = 180.0  # … for at most this long (a hung stop must not hang the SCM)
FAILURE_RESTART_DELAYS_MS = (10_000, 60_000, 60_000)
FAILURE_RESET_SECONDS = 24 * 3600
START_WAIT_SECONDS = 30
STOP_WAIT_SECONDS = 90
ERROR_ACCESS_DENIED = 5
ERROR_SERVICE_DOES_NOT_EXIST = 1060
ERROR_SERVICE_ALREADY_RUNNING = 1056
ERROR_SERVICE_NOT_ACTIVE = 1062
ERROR_SERVICE_EXISTS = 1073
ERROR_SERVICE_REQUEST_TIMEOUT = 1053

UNIT_NAME = "dropscribe.service"
SYSTEMD_DIR_ENV = "DROPSCRIBE_SYSTEMD_DIR"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
APP_PY = Path(__file__).resolve().parent.parent / "app.py"
ACTIONS = ("install", "remove", "start", "stop", "debug")


def _mod(name: str) -> ModuleType:
    """pywin32 (and winreg) are imported only here, when needed: tests put fakes in sys.modules."""
    return importlib.import_module(name)


# ---- command line ----------------------------------------------------------------------------
def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `service install|remove|start|stop|debug` to the app's subcommands."""
    p = subparsers.add_parser(
        "service",
        help="Windows service / systemd unit: install, remove, start, stop, debug",
        description="Install DropScribe as a Windows service (pywin32) or a systemd unit, "
        "control it, or run it in the foreground (debug).",
    )
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("--startup", choices=("auto", "manual"), default="auto",
                   help="Windows: start with the computer (auto, default) or by hand")
    p.add_argument("--user", default=None,
                   help="Windows: account to run as (DOMAIN\\name or .\\name; default "
                   "LocalSystem); Linux --system: User= of the unit")
    p.add_argument("--password", default=None, help="Windows: the account's password")
    p.add_argument("--system", action="store_true",
                   help="Linux: a system unit in /etc/systemd/system (needs root) instead of a "
                   "user unit")
    # `service install --settings X` works too; SUPPRESS keeps the top-level value otherwise.
    p.add_argument("--settings", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def run(settings: Settings, args: argparse.Namespace, *, platform: str | None = None) -> int:
    """`python app.py service <action>`; returns the exit code."""
    platform = platform or sys.platform
    if platform == "win32":
        return _windows(settings, args)
    if platform.startswith("linux"):
        return _linux(settings, args)
    print(f"error: `service` is not supported on this system ({platform}); run `python app.py` "
          "under your own supervisor (launchd, supervisord, …) — Ctrl-C/SIGINT or SIGTERM stop "
          "it cleanly", file=sys.stderr)
    return 2


def _settings_file(settings: Settings) -> Path:
    if settings.source is None:
        raise ValueError("no settings file: pass --settings PATH")
    return Path(settings.source).resolve()


# ---- Windows: the service class --------------------------------------------------------------
class EventLogHandler(logging.Handler):
    """Forward errors to the Windows Event Log (Application, source DropScribe), at most
    `burst` per `window_seconds`; then one line says how many were held back.

    Errors only: a failed file's warning (a retry, a lease) belongs in the log file, and an
    inbox full of bad files must not flood the Event Log or hide the one error that matters.
    """

    MAX_CHARS = 30_000  # an event's message is limited to about 31 839 characters

    def __init__(self, servicemanager: ModuleType, level: int = logging.ERROR, *,
                 burst: int = 10, window_seconds: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(level)
        self.servicemanager = servicemanager
        self.burst, self.window, self.clock = burst, window_seconds, clock
        self._window_start = -float("inf")
        self._sent = 0
        self._held_back = 0
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            now = self.clock()
            if now - self._window_start >= self.window:
                if self._held_back:
                    self.servicemanager.LogWarningMsg(
                        f"{SERVICE_NAME}: {self._held_back} more error(s) in the last "
                        f"{self.window:.0f} s were not forwarded here; see logs\\dropscribe.log")
                self._window_start, self._sent, self._held_back = now, 0, 0
            if self._sent >= self.burst:
                self._held_back += 1
                return
            self._sent += 1
            msg = self.format(record)[: self.MAX_CHARS]
            if record.levelno >= logging.ERROR:
                self.servicemanager.LogErrorMsg(msg)
            else:
                self.servicemanager.LogWarningMsg(msg)
        except Exception:  # noqa: BLE001 - logging must never break the service
            self.handleError(record)


class _ServiceMixin:
    """The service's behaviour; combined with win32serviceutil.ServiceFramework by
    :func:`service_class` (pywin32 is imported only when the class is asked for)."""

    _svc_name_ = SERVICE_NAME
    _svc_display_name_ = DISPLAY_NAME
    _svc_description_ = DESCRIPTION

    def __init__(self, args) -> None:  # noqa: ANN001 - the argv tuple pythonservice.exe passes
        super().__init__(args)  # type: ignore[call-arg]
        self._win32event = _mod("win32event")
        self.stop_event = self._win32event.CreateEvent(None, True, False, None)  # manual reset
        self._lock = threading.Lock()
        self._done = threading.Event()
        self.service: Service | None = None

    # -- called by the SCM on its own thread: must return quickly --
    def SvcStop(self) -> None:  # noqa: N802 - pywin32's name
        ws = _mod("win32service")
        self.ReportServiceStatus(ws.SERVICE_STOP_PENDING, waitHint=STOP_WAIT_HINT_MS)
        with self._lock:
            self._win32event.SetEvent(self.stop_event)
            service = self.service
        if service is not None:
            service.request_stop()  # the loop's stop() requeues running tasks, no attempt spent
        threading.Thread(target=self._report_stopping, name="svc-stop-pending",
                         daemon=True).start()

    SvcShutdown = SvcStop  # computer shutting down: requeue what runs, like a stop

    def GetAcceptedControls(self) -> int:  # noqa: N802 - pywin32's name
        """Also PRESHUTDOWN: it comes before SHUTDOWN and allows a longer wait, so running
        tasks are requeued (one transaction) and workers stopped before the power goes."""
        base = getattr(super(), "GetAcceptedControls", lambda: 0)()
        ws = _mod("win32service")
        return base | getattr(ws, "SERVICE_ACCEPT_PRESHUTDOWN", SERVICE_ACCEPT_PRESHUTDOWN)

    def SvcOtherEx(self, control: int, event_type: int, data: object) -> None:  # noqa: N802
        ws = _mod("win32service")
        if control == getattr(ws, "SERVICE_CONTROL_PRESHUTDOWN", SERVICE_CONTROL_PRESHUTDOWN):
            self.SvcStop()

    def _report_stopping(self) -> None:
        """Keep the SCM informed while workers stop (each report renews the wait hint)."""
        ws = _mod("win32service")
        waited = 0.0
        while not self._done.wait(STOP_REPORT_SECONDS) and waited < STOP_REPORT_LIMIT_SECONDS:
            waited += STOP_REPORT_SECONDS
            self.ReportServiceStatus(ws.SERVICE_STOP_PENDING, waitHint=STOP_WAIT_HINT_MS)

    def _stop_requested(self) -> bool:
        ev = self._win32event
        return ev.WaitForSingleObject(self.stop_event, 0) == ev.WAIT_OBJECT_0

    # -- the service's main thread --
    def SvcDoRun(self) -> None:  # noqa: N802 - pywin32's name
        sm = _mod("servicemanager")
        wsu = _mod("win32serviceutil")
        handler: EventLogHandler | None = None
        root = logging.getLogger()
        try:
            settings_path = wsu.GetServiceCustomOption(self, OPT_SETTINGS, None)
            python = wsu.GetServiceCustomOption(self, OPT_PYTHON, None)
            if not settings_path:
                raise RuntimeError("no settings path in the service's registry Parameters; run "
                                   "`python app.py --settings <file> service install` again")
            settings = load_settings(settings_path)
            os.chdir(settings.base_dir)  # not System32
            for stream in ("stdout", "stderr"):  # a service has no console: None here
                if getattr(sys, stream) is None:
                    setattr(sys, stream, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115
            logs.setup(settings.logs, console=False)
            handler = EventLogHandler(sm)
            root.addHandler(handler)
            if python and Path(python).is_file():
                multiprocessing.set_executable(python)  # workers: python.exe, not pythonservice
                if not getattr(sys, "argv", None):
                    sys.argv = [python]  # multiprocessing's spawn reads sys.argv
            else:
                log.warning("recorded interpreter %r not found; workers use %s", python,
                            sys.executable)
            service = Service(settings)
            with self._lock:
                self.service = service
                if self._stop_requested():  # a stop that came while we were starting
                    service.request_stop()
            sm.LogInfoMsg(f"{SERVICE_NAME} starting (settings {settings_path}, Python {python})")
            service.run_forever()
            sm.LogInfoMsg(f"{SERVICE_NAME} stopped")
        except Exception as err:
            if handler is not None:
                log.exception("service failed")  # the handler forwards it to the Event Log
            else:
                sm.LogErrorMsg(f"{SERVICE_NAME} failed to start: {err}\n"
                               + "".join(traceback.format_exception(err))[-20_000:])
            raise  # stopped with an error: the SCM's recovery actions restart it
        finally:
            if handler is not None:
                root.removeHandler(handler)
            self._done.set()


_classes: dict[type, type] = {}


def service_class() -> type:
    """``DropScribeService(win32serviceutil.ServiceFramework)``, built on first use."""
    base = _mod("win32serviceutil").ServiceFramework
    cls = _classes.get(base)
    if cls is None:
        cls = type("DropScribeService", (_ServiceMixin, base), {"__module__": __name__})
        cls.__qualname__ = "DropScribeService"
        _classes[base] = cls
    return cls


def __getattr__(name: str):  # noqa: ANN202 - PEP 562; pythonservice.exe asks for the class
    if name == "DropScribeService":
        return service_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---- Windows: install and control --------------------------------------------------------------
@dataclass(frozen=True)
class PythonEnv:
    """The Python environment the service must run in (a venv, a conda env or a plain install)."""

    python: Path  # sys.executable: the interpreter that runs app.py and the workers
    prefix: Path  # sys.exec_prefix: the environment's root (pythonservice.exe goes here)
    base_prefix: Path  # sys.base_exec_prefix: the base install (python3X.dll of a venv)
    version: str  # "311"

    @classmethod
    def current(cls) -> PythonEnv:
        return cls(Path(os.path.abspath(sys.executable)), Path(sys.exec_prefix),
                   Path(sys.base_exec_prefix), f"{sys.version_info[0]}{sys.version_info[1]}")

    @property
    def service_exe(self) -> Path:
        return self.prefix / "pythonservice.exe"

    def dll_dirs(self, pywintypes_dir: Path | None) -> list[Path]:
        """Folders the service's PATH needs so python3X.dll, pywintypes3X.dll and conda's DLLs
        (sqlite3.dll, ffi, openssl …) load."""
        candidates: list[Path] = []
        for root in (self.prefix, self.base_prefix):
            candidates += [root, root / "Library" / "mingw-w64" / "bin",
                           root / "Library" / "usr" / "bin", root / "Library" / "bin",
                           root / "DLLs", root / "Scripts"]
        if pywintypes_dir is not None:
            candidates.append(pywintypes_dir)
        return _unique(p for p in candidates if p.is_dir())


def _unique(paths) -> list:  # noqa: ANN001
    seen: set[str] = set()
    out = []
    for p in paths:
        key = os.path.normcase(os.path.normpath(str(p)))
        if key and key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _class_string() -> str:
    """``<folder>\\service.winservice.DropScribeService``: pythonservice.exe puts the folder on
    sys.path and imports the module (its buffer holds 255 characters)."""
    root = str(Path(__file__).resolve().parent.parent)
    full = f"{root}\\{CLASS_PATH}"
    return full if len(full) < 250 else CLASS_PATH  # long path: rely on `pip install -e .`


def _system_path() -> str:
    """The PATH a LocalSystem service gets (HKLM Session Manager\\Environment)."""
    try:
        winreg = _mod("winreg")
        key = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE,
                             r"SYSTEM\CurrentControlSet\Control\Session Manager\Environment")
        try:
            value, kind = winreg.QueryValueEx(key, "Path")
        finally:
            winreg.CloseKey(key)
        return winreg.ExpandEnvironmentStrings(value) if kind == winreg.REG_EXPAND_SZ else value
    except (ImportError, OSError):
        return os.environ.get("PATH", "")


def _ensure_service_exe(env: PythonEnv) -> Path:
    """pythonservice.exe in the environment's root (copied from pywin32's folder, refreshed when
    pywin32 was upgraded): there a venv's pyvenv.cfg and a conda env's python3X.dll are found."""
    shipped = Path(_mod("win32service").__file__).parent / "pythonservice.exe"
    target = env.service_exe
    if shipped.is_file():
        st = shipped.stat()
        if not target.is_file() or target.stat().st_size != st.st_size or \
                target.stat().st_mtime < st.st_mtime:
            try:
                shutil.copy2(shipped, target)
                print(f"copied {shipped} -> {target}")
            except OSError as err:
                if not target.is_file():
                    raise
                print(f"note: could not refresh {target} ({err}); stop the service first to "
                      "update it")
    if not target.is_file():
        raise FileNotFoundError(
            f"pythonservice.exe not found (looked for {shipped}); reinstall pywin32: "
            f'"{env.python}" -m pip install --force-reinstall pywin32')
    return target


def dll_problems(env: PythonEnv, exe: Path, system_path: str) -> list[str]:
    """Copy commands for DLLs pythonservice.exe may not find: neither next to it nor on the
    system PATH (the folders added to the service's own PATH usually cover them; if the service
    still fails with error 1053, run the commands)."""
    search = [exe.parent] + [Path(p) for p in system_path.split(";") if p.strip()]
    wanted: list[tuple[str, Path | None]] = []
    name = f"python{env.version}.dll"
    wanted.append((name, next((d / name for d in (env.prefix, env.base_prefix)
                               if (d / name).is_file()), None)))
    try:
        pyw = Path(_mod("pywintypes").__file__)
        wanted.append((pyw.name, pyw))
    except (ImportError, AttributeError, TypeError):
        wanted.append((f"pywintypes{env.version}.dll", None))
    problems = []
    for dll, src in wanted:
        if any((d / dll).is_file() for d in search):
            continue
        if src is None:
            problems.append(f"{dll} not found in this environment; reinstall Python/pywin32")
        else:
            problems.append(f'copy "{src}" "{exe.parent / dll}"')
    return problems


def _set_failure_actions(ws: ModuleType) -> None:
    """Restart after 10 s, 60 s, 60 s; reset the failure count after a day. Also on a 'clean'
    stop with an error code (SvcDoRun raised), not only on a crash."""
    scm = ws.OpenSCManager(None, None, ws.SC_MANAGER_ALL_ACCESS)
    try:
        hs = ws.OpenService(scm, SERVICE_NAME, ws.SERVICE_ALL_ACCESS)
        try:
            actions = [(ws.SC_ACTION_RESTART, ms) for ms in FAILURE_RESTART_DELAYS_MS]
            ws.ChangeServiceConfig2(hs, ws.SERVICE_CONFIG_FAILURE_ACTIONS, {
                "ResetPeriod": FAILURE_RESET_SECONDS, "RebootMsg": None, "Command": None,
                "Actions": actions,
            })
            try:
                ws.ChangeServiceConfig2(hs, getattr(ws, "SERVICE_CONFIG_FAILURE_ACTIONS_FLAG", 4),
                                        True)
            except (ws.error, NotImplementedError, TypeError) as err:
                print(f"note: restart-on-error flag not set ({err}); crashes still restart")
            try:  # how long Windows waits for us at shutdown (after PRESHUTDOWN)
                ws.ChangeServiceConfig2(hs, getattr(ws, "SERVICE_CONFIG_PRESHUTDOWN_INFO",
                                                    SERVICE_CONFIG_PRESHUTDOWN_INFO),
                                        PRESHUTDOWN_TIMEOUT_MS)
            except (ws.error, NotImplementedError, TypeError) as err:
                print(f"note: preshutdown timeout not set ({err}); Windows' default applies")
        finally:
            ws.CloseServiceHandle(hs)
    finally:
        ws.CloseServiceHandle(scm)


def _set_environment(path: str) -> None:
    """The service's own PATH (REG_MULTI_SZ `Environment`, merged into the system environment
    by the SCM; no %VAR% expansion, so the full value is written)."""
    winreg = _mod("winreg")
    key = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE,
                         rf"SYSTEM\CurrentControlSet\Services\{SERVICE_NAME}", 0,
                         winreg.KEY_SET_VALUE)
    try:
        winreg.SetValueEx(key, "Environment", 0, winreg.REG_MULTI_SZ,
                          [f"PATH={path}", "PYTHONUNBUFFERED=1"])
    finally:
        winreg.CloseKey(key)


def _win_error_hint(code: int | None) -> str:
    return {
        ERROR_ACCESS_DENIED: "run the command from an Administrator prompt",
        ERROR_SERVICE_DOES_NOT_EXIST: "not installed: python app.py service install",
        ERROR_SERVICE_REQUEST_TIMEOUT: "pythonservice.exe could not start Python; run "
        "`python app.py service install` again (it prints the DLL copy commands) and try "
        "`python app.py service debug`",
        1057: "check --user (DOMAIN\\name or .\\name)",
        1069: "check --user/--password and that the account has 'Log on as a service'",
    }.get(code or 0, "")


def _win_fail(what: str, err: BaseException) -> int:
    code = getattr(err, "winerror", None)
    msg = getattr(err, "strerror", None) or str(err)
    hint = _win_error_hint(code)
    print(f"error: {what}: {msg}" + (f" ({code})" if code else "") + (f" — {hint}" if hint
                                                                      else ""), file=sys.stderr)
    return 1


def install_windows(settings_path: Path, startup: str = "auto", user: str | None = None,
                    password: str | None = None, env: PythonEnv | None = None) -> int:
    wsu, ws = _mod("win32serviceutil"), _mod("win32service")
    env = env or PythonEnv.current()
    try:
        exe = _ensure_service_exe(env)
    except OSError as err:
        hint = " — run the command from an Administrator prompt" if isinstance(
            err, PermissionError) else ""
        print(f"error: {err}{hint}", file=sys.stderr)
        return 1
    if user and "\\" not in user and "@" not in user:
        user = f".\\{user}"  # a local account
    start_type = {"auto": ws.SERVICE_AUTO_START, "manual": ws.SERVICE_DEMAND_START}[startup]
    common = dict(startType=start_type, userName=user, password=password, exeName=str(exe),
                  description=DESCRIPTION)
    class_string = _class_string()
    try:
        try:
            wsu.InstallService(class_string, SERVICE_NAME, DISPLAY_NAME, **common)
            done = "installed"
        except ws.error as err:
            if getattr(err, "winerror", None) != ERROR_SERVICE_EXISTS:
                raise
            wsu.ChangeServiceConfig(class_string, SERVICE_NAME, displayName=DISPLAY_NAME,
                                    **common)
            done = "updated"
        wsu.SetServiceCustomOption(SERVICE_NAME, OPT_PYTHON, str(env.python))
        wsu.SetServiceCustomOption(SERVICE_NAME, OPT_SETTINGS, str(settings_path))
        _set_failure_actions(ws)
        system_path = _system_path()
        pyw_dir = None
        try:
            pyw_dir = Path(_mod("pywintypes").__file__).parent
        except (ImportError, AttributeError, TypeError):
            pass
        dirs = [str(d) for d in env.dll_dirs(pyw_dir)]
        _set_environment(";".join(_unique(dirs + [p for p in system_path.split(";") if p])))
    except (ws.error, OSError) as err:
        return _win_fail("could not install the service", err)
    print(f"service {SERVICE_NAME} {done} ({startup} start"
          f"{', account ' + user if user else ', LocalSystem'})")
    print(f"  host:     {exe}")
    print(f"  python:   {env.python}")
    print(f"  settings: {settings_path}")
    print("  on failure: restart after 10 s, 60 s, 60 s (count resets after a day)")
    problems = dll_problems(env, exe, system_path)
    if problems:
        print("warning: pythonservice.exe may not find these DLLs (Windows error 1053). The "
              "service's PATH includes their folders; if it still fails, run as Administrator:")
        for line in problems:
            print(f"  {line}")
    print("start it: python app.py service start   (or: net start DropScribe)")
    return 0


def _windows(settings: Settings, args: argparse.Namespace) -> int:
    try:
        wsu, ws = _mod("win32serviceutil"), _mod("win32service")
    except ImportError:
        print("error: the Windows service needs pywin32: python -m pip install pywin32",
              file=sys.stderr)
        return 1
    action = args.action
    if action == "install":
        try:
            settings_path = _settings_file(settings)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return install_windows(settings_path, args.startup, args.user, args.password)
    if action == "remove":
        try:
            wsu.StopService(SERVICE_NAME)
            wsu.WaitForServiceStatus(SERVICE_NAME, ws.SERVICE_STOPPED, STOP_WAIT_SECONDS)
        except ws.error:
            pass  # not running (or not installed: RemoveService says so)
        try:
            wsu.RemoveService(SERVICE_NAME)
        except ws.error as err:
            return _win_fail("could not remove the service", err)
        print(f"service {SERVICE_NAME} removed")
        return 0
    if action == "start":
        try:
            wsu.StartService(SERVICE_NAME)
            wsu.WaitForServiceStatus(SERVICE_NAME, ws.SERVICE_RUNNING, START_WAIT_SECONDS)
        except ws.error as err:
            if getattr(err, "winerror", None) == ERROR_SERVICE_ALREADY_RUNNING:
                print(f"service {SERVICE_NAME} is already running")
                return 0
            return _win_fail("could not start the service", err)
        print(f"service {SERVICE_NAME} started; logs in {settings.logs} and the Event Log")
        return 0
    if action == "stop":
        try:
            wsu.StopService(SERVICE_NAME)
            print(f"stopping {SERVICE_NAME} (running tasks go back to the queue) …")
            wsu.WaitForServiceStatus(SERVICE_NAME, ws.SERVICE_STOPPED, STOP_WAIT_SECONDS)
        except ws.error as err:
            if getattr(err, "winerror", None) == ERROR_SERVICE_NOT_ACTIVE:
                print(f"service {SERVICE_NAME} is not running")
                return 0
            return _win_fail("could not stop the service", err)
        print(f"service {SERVICE_NAME} stopped")
        return 0
    # debug: the installed service's host in this console (same DLL loading as the service)
    exe = PythonEnv.current().service_exe
    if not exe.is_file():
        print(f"error: {exe} not found; run `python app.py service install` first",
              file=sys.stderr)
        return 1
    try:
        return subprocess.run([str(exe), "-debug", SERVICE_NAME], check=False).returncode
    except KeyboardInterrupt:
        return 0


# ---- Linux: systemd ----------------------------------------------------------------------------
def _systemd_word(value: str, *, command: bool = False) -> str:
    """One word of an Exec line: '%' → '%%' (specifiers), '$' → '$$' in arguments (variable
    expansion), double quotes with C escapes when it has whitespace, quotes or backslashes."""
    if "\n" in value or "\r" in value:
        raise ValueError(f"a path with a line break cannot go into a systemd unit: {value!r}")
    value = value.replace("%", "%%")
    if not command:
        value = value.replace("$", "$$")
    if value and not any(c.isspace() or c in "\"'\\;" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_unit(python: str, app_py: Path, settings: Path, user_mode: bool,
                 *, run_as: str | None = None) -> str:
    """The text of dropscribe.service; all paths absolute (a unit has no current directory)."""
    for p in (python, app_py, settings):
        if not os.path.isabs(p):
            raise ValueError(f"systemd needs absolute paths, got {p}")
    settings = Path(settings)
    exec_start = " ".join([_systemd_word(str(python), command=True), _systemd_word(str(app_py)),
                           "--settings", _systemd_word(str(settings))])
    workdir = str(settings.parent).replace("%", "%%")
    lines = ["[Unit]", "Description=DropScribe watch-folder transcription service"]
    if not user_mode:
        lines += ["Wants=network-online.target", "After=network-online.target"]
    lines += [
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={exec_start}",
        f"WorkingDirectory={workdir}",
    ]
    if not user_mode and run_as:
        lines.append(f"User={run_as}")
    lines += [
        "Environment=PYTHONUNBUFFERED=1",
        "Restart=on-failure",
        "RestartSec=10",
        "KillSignal=SIGINT",
        "KillMode=mixed",
        "TimeoutStopSec=60",
        "",
        "[Install]",
        f"WantedBy={'default.target' if user_mode else 'multi-user.target'}",
        "",
    ]
    return "\n".join(lines)


def unit_dir(user_mode: bool) -> Path:
    """Where the unit goes: DROPSCRIBE_SYSTEMD_DIR if set, else the user or system folder."""
    override = os.environ.get(SYSTEMD_DIR_ENV)
    if override:
        return Path(override)
    if not user_mode:
        return SYSTEM_UNIT_DIR
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


def _user_mode(args: argparse.Namespace) -> bool:
    """--system, or (for remove/start/stop) only a system unit is installed."""
    if getattr(args, "system", False):
        return False
    if args.action != "install" and not os.environ.get(SYSTEMD_DIR_ENV):
        if not (unit_dir(True) / UNIT_NAME).exists() and (SYSTEM_UNIT_DIR / UNIT_NAME).exists():
            return False
    return True


def _systemctl(user_mode: bool, *words: str) -> list[str]:
    return ["systemctl", *(["--user"] if user_mode else []), *words]


def _shown(argv: list[str]) -> str:
    """A systemctl command as the user would type it (a system unit needs sudo)."""
    return ("" if "--user" in argv else "sudo ") + " ".join(argv)


def _run_systemctl(argv: list[str]) -> int:
    try:
        return subprocess.run(argv, check=False).returncode
    except FileNotFoundError:
        print(f"error: systemctl not found; run it yourself: {_shown(argv)}", file=sys.stderr)
        return 1


def _install_linux(settings: Settings, args: argparse.Namespace) -> int:
    user_mode = _user_mode(args)
    try:
        settings_path = _settings_file(settings)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run_as = None
    if not user_mode:
        run_as = args.user or os.environ.get("SUDO_USER") or getpass.getuser()
        run_as = None if run_as == "root" else run_as
    # abspath, not resolve(): a venv's bin/python is a symlink that must stay the venv's.
    text = systemd_unit(os.path.abspath(sys.executable), APP_PY, settings_path, user_mode,
                        run_as=run_as)
    folder = unit_dir(user_mode)
    path = folder / UNIT_NAME
    existed = path.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except PermissionError:
        print(f"error: cannot write {path}; a system unit needs root: "
              f'sudo "{os.path.abspath(sys.executable)}" "{APP_PY}" --settings '
              f'"{settings_path}" service install --system', file=sys.stderr)
        return 1
    print(f"{'updated' if existed else 'wrote'} {path}")
    sudo = "" if user_mode else "sudo "
    ctl = "systemctl --user" if user_mode else "systemctl"
    print("enable and start it:")
    print(f"  {sudo}{ctl} daemon-reload && {sudo}{ctl} enable --now dropscribe")
    if user_mode:
        who = os.environ.get("USER") or getpass.getuser()
        print("start at boot without logging in:")
        print(f"  loginctl enable-linger {who}")
        print("logs: journalctl --user -u dropscribe -f   and  " + str(settings.logs))
    else:
        print(f"runs as {run_as or 'root'}; logs: journalctl -u dropscribe -f   and  "
              + str(settings.logs))
    return 0


def _linux(settings: Settings, args: argparse.Namespace) -> int:
    action = args.action
    if action == "install":
        return _install_linux(settings, args)
    if action == "debug":
        return runner.run_foreground(settings)  # the same loop as `python app.py`
    user_mode = _user_mode(args)
    if action in ("start", "stop"):
        return _run_systemctl(_systemctl(user_mode, action, "dropscribe"))
    # remove: stop and disable while the unit file still exists, delete it, reload
    path = unit_dir(user_mode) / UNIT_NAME
    if not path.exists():
        print(f"nothing to remove: {path} does not exist")
        return 0
    disable = _systemctl(user_mode, "disable", "--now", "dropscribe")
    ok = _run_systemctl(disable) == 0
    try:
        path.unlink()
    except PermissionError:
        print(f"error: cannot delete {path}; run with sudo", file=sys.stderr)
        return 1
    reload = _systemctl(user_mode, "daemon-reload")
    ok = _run_systemctl(reload) == 0 and ok
    print(f"removed {path}")
    if not ok:
        print(f"if systemd still lists it: {_shown(disable)}; {_shown(reload)}")
    return 0

