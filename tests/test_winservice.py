"""`python app.py service …`: the pywin32 service class against fake win32 modules (running the
REAL service loop), the Windows install/control calls, and the systemd unit on Linux."""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from service import db, winservice
from service.config import load_settings
from service.tasks import TaskQueue
from tests.conftest import write_settings
from tests.speech import tone_wav, wait_for

REPO = Path(__file__).resolve().parents[1]


# ---- fake pywin32 ------------------------------------------------------------------------------
class FakeWinError(Exception):
    def __init__(self, winerror: int, funcname: str = "", strerror: str = "") -> None:
        super().__init__(winerror, funcname, strerror)
        self.winerror, self.funcname = winerror, funcname
        self.strerror = strerror or f"error {winerror}"


class FakeWin:
    """win32serviceutil, win32service, win32event, servicemanager, pywintypes and winreg
    stand-ins that record every call (pywin32's real names and signatures)."""

    SERVICE_STOPPED, SERVICE_STOP_PENDING, SERVICE_RUNNING = 1, 3, 4
    SERVICE_AUTO_START, SERVICE_DEMAND_START = 2, 3

    def __init__(self, pywin32_dir: Path, pywintypes_dll: Path) -> None:
        self.calls: list[tuple] = []
        self.options: dict[tuple[str, str], str] = {}  # the Parameters registry key
        self.registry: dict[tuple[str, str], object] = {}  # values written with winreg
        self.events: list[tuple[str, str]] = []  # Event Log
        self.raise_on: dict[str, FakeWinError] = {}
        self.system_path = r"C:\Windows\system32;%SystemRoot%"
        self.modules = {
            "win32serviceutil": self._serviceutil(),
            "win32service": self._service(pywin32_dir),
            "win32event": self._event(),
            "servicemanager": self._servicemanager(),
            "pywintypes": types.SimpleNamespace(__file__=str(pywintypes_dll), error=FakeWinError),
            "winreg": self._winreg(),
        }

    def _record(self, name: str, *args, **kwargs) -> None:
        self.calls.append((name, args, kwargs))
        if name in self.raise_on:
            raise self.raise_on[name]

    def called(self, name: str) -> list[tuple]:
        return [(a, k) for n, a, k in self.calls if n == name]

    def _serviceutil(self) -> types.ModuleType:
        fake = self
        m = types.ModuleType("win32serviceutil")

        class ServiceFramework:
            def __init__(self, args) -> None:  # noqa: ANN001
                self.args = args
                self.reports: list[tuple[int, int]] = []

            def ReportServiceStatus(self, serviceStatus, waitHint=5000, win32ExitCode=0,  # noqa: N802,N803,ANN001
                                    svcExitCode=0) -> None:  # noqa: N803,ANN001
                self.reports.append((serviceStatus, waitHint))

        def _name(obj) -> str:  # noqa: ANN001
            return getattr(obj, "_svc_name_", obj)

        m.ServiceFramework = ServiceFramework
        for name in ("InstallService", "ChangeServiceConfig", "RemoveService", "StartService",
                     "StopService", "WaitForServiceStatus"):
            setattr(m, name, lambda *a, _n=name, **k: fake._record(_n, *a, **k))
        m.SetServiceCustomOption = lambda svc, opt, value: fake.options.__setitem__(
            (_name(svc), opt), value)
        m.GetServiceCustomOption = lambda svc, opt, default=None: fake.options.get(
            (_name(svc), opt), default)
        return m

    def _service(self, pywin32_dir: Path) -> types.ModuleType:
        fake = self
        m = types.ModuleType("win32service")
        m.__file__ = str(pywin32_dir / "win32service.pyd")
        m.error = FakeWinError
        for k in ("SERVICE_STOPPED", "SERVICE_STOP_PENDING", "SERVICE_RUNNING",
                  "SERVICE_AUTO_START", "SERVICE_DEMAND_START"):
            setattr(m, k, getattr(self, k))
        m.SC_MANAGER_ALL_ACCESS, m.SERVICE_ALL_ACCESS = 0xF003F, 0xF01FF
        m.SERVICE_CONFIG_FAILURE_ACTIONS, m.SERVICE_CONFIG_FAILURE_ACTIONS_FLAG = 2, 4
        m.SC_ACTION_RESTART = 1
        m.OpenSCManager = lambda *a: "scm"
        m.OpenService = lambda scm, name, access: ("svc", name)
        m.CloseServiceHandle = lambda h: None
        m.ChangeServiceConfig2 = lambda hs, level, info: fake._record(
            "ChangeServiceConfig2", hs, level, info)
        return m

    def _event(self) -> types.ModuleType:
        m = types.ModuleType("win32event")
        m.WAIT_OBJECT_0, m.WAIT_TIMEOUT = 0, 258
        m.CreateEvent = lambda sa, manual, initial, name: threading.Event()
        m.SetEvent = lambda ev: ev.set()
        m.WaitForSingleObject = lambda ev, ms: 0 if ev.wait(ms / 1000) else 258
        return m

    def _servicemanager(self) -> types.ModuleType:
        m = types.ModuleType("servicemanager")
        for kind in ("Info", "Warning", "Error"):
            setattr(m, f"Log{kind}Msg", lambda msg, _k=kind: self.events.append((_k, msg)))
        return m

    def _winreg(self) -> types.ModuleType:
        fake = self
        m = types.ModuleType("winreg")
        m.HKEY_LOCAL_MACHINE, m.KEY_SET_VALUE = "HKLM", 2
        m.REG_SZ, m.REG_EXPAND_SZ, m.REG_MULTI_SZ = 1, 2, 7
        m.OpenKey = lambda root, sub, reserved=0, access=0: sub
        m.CloseKey = lambda key: None

        def query(key: str, name: str):  # noqa: ANN202
            if key.endswith("Session Manager\\Environment") and name == "Path":
                return fake.system_path, m.REG_EXPAND_SZ
            raise OSError(2, "not found")

        m.QueryValueEx = query
        m.ExpandEnvironmentStrings = lambda s: s.replace("%SystemRoot%", r"C:\Windows")
        m.SetValueEx = lambda key, name, reserved, kind, value: fake.registry.__setitem__(
            (key, name), (kind, value))
        return m


@pytest.fixture
def pyenv(tmp_path: Path) -> winservice.PythonEnv:
    """A venv-like layout: python.exe in Scripts\\, python311.dll only in the base install."""
    prefix, base = tmp_path / "env 环境", tmp_path / "base"
    for d in (prefix / "Scripts", prefix / "Library" / "bin", prefix / "DLLs", base / "DLLs",
              prefix / "Lib" / "site-packages" / "win32",
              prefix / "Lib" / "site-packages" / "pywin32_system32"):
        d.mkdir(parents=True)
    (prefix / "Scripts" / "python.exe").write_bytes(b"MZ")
    (base / "python311.dll").write_bytes(b"MZ")
    (prefix / "Lib" / "site-packages" / "win32" / "pythonservice.exe").write_bytes(b"MZ host")
    (prefix / "Lib" / "site-packages" / "pywin32_system32" / "pywintypes311.dll").write_bytes(
        b"MZ")
    return winservice.PythonEnv(prefix / "Scripts" / "python.exe", prefix, base, "311")


@pytest.fixture
def win(monkeypatch: pytest.MonkeyPatch, pyenv: winservice.PythonEnv) -> FakeWin:
    site = pyenv.prefix / "Lib" / "site-packages"
    fake = FakeWin(site / "win32", site / "pywin32_system32" / "pywintypes311.dll")
    for name, module in fake.modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(winservice.PythonEnv, "current", classmethod(lambda cls: pyenv))
    return fake


def parse(*argv: str) -> argparse.Namespace:
    """The app's parser shape: global --settings, then subcommands (cli.py adds ours the same)."""
    p = argparse.ArgumentParser(prog="app.py")
    p.add_argument("--settings", type=Path, default=None)
    sub = p.add_subparsers(dest="command")
    winservice.add_parser(sub)
    return p.parse_args(argv)


# ---- Windows: install / remove / start / stop ---------------------------------------------------
def test_install_records_interpreter_settings_host_recovery_and_path(
    win: FakeWin, pyenv: winservice.PythonEnv, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    settings_path = write_settings(tmp_path / "配置 files", {"gpu": {"devices": "none"}})
    args = parse("service", "install", "--user", "alice", "--password", "pw")
    rc = winservice.run(load_settings(settings_path), args, platform="win32")
    out = capsys.readouterr().out
    assert rc == 0, out
    exe = pyenv.prefix / "pythonservice.exe"
    assert exe.read_bytes() == b"MZ host"  # copied next to pyvenv.cfg / python3X.dll
    [(args_, kw)] = win.called("InstallService")
    assert args_ == (f"{REPO}\\service.winservice.DropScribeService", "DropScribe",
                     winservice.DISPLAY_NAME)
    assert kw == {"startType": FakeWin.SERVICE_AUTO_START, "userName": ".\\alice",
                  "password": "pw", "exeName": str(exe), "description": winservice.DESCRIPTION}
    assert win.options == {("DropScribe", "python"): str(pyenv.python),
                           ("DropScribe", "settings"): str(settings_path.resolve())}
    actions, flag, preshutdown = win.called("ChangeServiceConfig2")
    assert actions[0] == (("svc", "DropScribe"), 2, {
        "ResetPeriod": 86400, "RebootMsg": None, "Command": None,
        "Actions": [(1, 10_000), (1, 60_000), (1, 60_000)]})
    assert flag[0] == (("svc", "DropScribe"), 4, True)
    assert preshutdown[0] == (("svc", "DropScribe"), 7, 60_000)  # SERVICE_CONFIG_PRESHUTDOWN_INFO
    kind, env = win.registry[(r"SYSTEM\CurrentControlSet\Services\DropScribe", "Environment")]
    assert kind == 7 and env[1] == "PYTHONUNBUFFERED=1"
    p, b = pyenv.prefix, pyenv.base_prefix
    assert env[0] == "PATH=" + ";".join(map(str, [
        p, p / "Library" / "bin", p / "DLLs", p / "Scripts", b, b / "DLLs",
        p / "Lib" / "site-packages" / "pywin32_system32", r"C:\Windows\system32", r"C:\Windows",
    ]))
    # neither DLL is next to pythonservice.exe or on the system PATH: exact copy commands
    assert f'copy "{b / "python311.dll"}" "{p / "python311.dll"}"' in out
    pyw = p / "Lib" / "site-packages" / "pywin32_system32" / "pywintypes311.dll"
    assert f'copy "{pyw}" "{p / "pywintypes311.dll"}"' in out


def test_install_again_updates_the_service_and_dlls_next_to_host_need_no_copy(
    win: FakeWin, pyenv: winservice.PythonEnv, settings, capsys: pytest.CaptureFixture  # noqa: ANN001
) -> None:
    for dll in ("python311.dll", "pywintypes311.dll"):
        (pyenv.prefix / dll).write_bytes(b"MZ")
    win.raise_on["InstallService"] = FakeWinError(winservice.ERROR_SERVICE_EXISTS)
    rc = winservice.run(settings, parse("service", "install", "--startup", "manual"),
                        platform="win32")
    out = capsys.readouterr().out
    assert rc == 0 and "updated" in out and "copy" not in out
    [(args_, kw)] = win.called("ChangeServiceConfig")
    assert args_[1] == "DropScribe" and kw["startType"] == FakeWin.SERVICE_DEMAND_START
    assert kw["userName"] is None and kw["exeName"] == str(pyenv.prefix / "pythonservice.exe")
    assert win.options[("DropScribe", "settings")] == str(settings.source)


def test_remove_start_stop_and_clear_errors(
    win: FakeWin, settings, capsys: pytest.CaptureFixture  # noqa: ANN001
) -> None:
    def do(action: str) -> int:
        return winservice.run(settings, parse("service", action), platform="win32")

    assert do("start") == 0
    assert win.called("StartService") == [(("DropScribe",), {})]
    assert win.called("WaitForServiceStatus")[-1][0] == ("DropScribe", FakeWin.SERVICE_RUNNING,
                                                        winservice.START_WAIT_SECONDS)
    assert do("stop") == 0
    assert win.called("StopService") == [(("DropScribe",), {})]
    assert win.called("WaitForServiceStatus")[-1][0] == ("DropScribe", FakeWin.SERVICE_STOPPED,
                                                        winservice.STOP_WAIT_SECONDS)
    assert do("remove") == 0
    assert win.called("RemoveService") == [(("DropScribe",), {})]
    assert [c[0] for c in win.calls][-3:] == ["StopService", "WaitForServiceStatus",
                                              "RemoveService"]
    capsys.readouterr()
    win.raise_on["StartService"] = FakeWinError(5, "StartService", "Access is denied.")
    assert do("start") == 1
    assert "Access is denied. (5) — run the command from an Administrator prompt" in \
        capsys.readouterr().err
    win.raise_on["StopService"] = FakeWinError(winservice.ERROR_SERVICE_NOT_ACTIVE)
    assert do("stop") == 0 and "not running" in capsys.readouterr().out


def test_event_log_handler_forwards_errors_only_and_rate_limited(win: FakeWin) -> None:
    logger = logging.getLogger("dropscribe.test.eventlog")
    now = [0.0]
    handler = winservice.EventLogHandler(win.modules["servicemanager"], burst=3,
                                         window_seconds=60, clock=lambda: now[0])
    logger.addHandler(handler)
    try:
        logger.info("routine")
        logger.warning("任务 %s lease expired", 7)  # a file's warning: the log file only
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("dispatch failed")
        for i in range(10):  # an inbox full of bad files
            logger.error("task %s failed for good", i)
        assert len(win.events) == 3
        now[0] = 61.0  # the next window: one line says what was held back, then errors again
        logger.error("任务 %s 失败", 99)
    finally:
        logger.removeHandler(handler)
    assert [k for k, _ in win.events] == ["Error", "Error", "Error", "Warning", "Error"]
    assert "dispatch failed" in win.events[0][1] and "ValueError: boom" in win.events[0][1]
    assert win.events[1][1] == "dropscribe.test.eventlog: task 0 failed for good"
    assert "8 more error(s)" in win.events[3][1]
    assert win.events[4][1] == "dropscribe.test.eventlog: 任务 99 失败"


# ---- Windows: the service class runs the real loop ---------------------------------------------
@pytest.fixture
def real_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_en_checkpoint: Path):
    path = write_settings(tmp_path / "服务 svc", {
        "gpu": {"devices": "none"}, "http": {"enabled": False},
        "models": {"default": "tiny.en", "allow_download": False},
        "watcher": {"stable_seconds": 0.5},
        "scheduler": {"interval_seconds": 0.5, "progress_seconds": 0.5},
    })
    settings = load_settings(path)
    settings.models_dir.mkdir(parents=True)
    shutil.copy(tiny_en_checkpoint, settings.models_dir / "tiny.en.pt")
    monkeypatch.chdir(tmp_path)  # SvcDoRun changes directory; this puts it back
    yield path, settings
    root = logging.getLogger()
    for h in list(root.handlers):  # the service's rotating file handler
        if getattr(h, "_dropscribe", False):
            root.removeHandler(h)
            h.close()


def _start_in_thread(svc) -> tuple[threading.Thread, list]:  # noqa: ANN001
    errors: list[BaseException] = []

    def target() -> None:
        try:
            svc.SvcDoRun()
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    t = threading.Thread(target=target, name="SvcDoRun", daemon=True)
    t.start()
    return t, errors


def test_service_runs_the_real_loop_and_svcstop_requeues_the_running_task(
    win: FakeWin, real_settings, tmp_path: Path
) -> None:
    path, settings = real_settings
    win.options[("DropScribe", "settings")] = str(path)
    win.options[("DropScribe", "python")] = sys.executable
    cls = winservice.service_class()
    assert cls is winservice.DropScribeService and cls._svc_name_ == "DropScribe"
    assert cls.__module__ == "service.winservice" and cls.__qualname__ == "DropScribeService"
    svc = cls(("DropScribe",))
    thread, errors = _start_in_thread(svc)
    wait_for(lambda: settings.sqlite_path.exists(), timeout=30)
    queue = TaskQueue(db.make_engine(settings.database_url))
    try:
        staged = tone_wav(tmp_path / "staging" / "long tone 长.wav", 120)
        dest = settings.inbox / "team" / staged.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, dest)
        task = wait_for(lambda: next(iter(queue.list(limit=5)), None), timeout=30)
        assert task.source == "team/long tone 长.wav"
        wait_for(lambda: queue.get(task.id).status == "processing", timeout=90)

        started = time.monotonic()
        svc.SvcStop()
        assert svc.reports[0] == (FakeWin.SERVICE_STOP_PENDING, winservice.STOP_WAIT_HINT_MS)
        thread.join(timeout=30)
        assert not thread.is_alive(), "SvcDoRun did not return after SvcStop"
        assert time.monotonic() - started < 10
        assert errors == []
        after = queue.get(task.id)
        assert (after.status, after.attempts, after.progress) == ("pending", 0, 0.0)
        assert "service stopped" in [e.detail for e in queue.events(task.id)]
        assert dest.exists()  # the source stays in the inbox for the next start
    finally:
        queue.engine.dispose()
    assert not [p for p in multiprocessing.active_children() if p.name == "dropscribe-worker"]
    infos = [m for k, m in win.events if k == "Info"]
    assert infos[0].startswith(f"DropScribe starting (settings {path}")
    assert infos[-1] == "DropScribe stopped"
    assert not [m for k, m in win.events if k == "Error"]
    log_text = (settings.logs / "dropscribe.log").read_text(encoding="utf-8")
    assert "requeued (service stopping)" in log_text


def test_stop_that_arrives_while_starting_still_stops(win: FakeWin, real_settings) -> None:
    path, settings = real_settings
    win.options[("DropScribe", "settings")] = str(path)
    svc = winservice.service_class()(("DropScribe",))
    svc.SvcStop()  # before SvcDoRun has built the Service
    thread, errors = _start_in_thread(svc)
    thread.join(timeout=30)
    assert not thread.is_alive() and errors == []
    assert ("Info", "DropScribe stopped") in win.events


def test_preshutdown_is_accepted_and_stops_like_a_stop(win: FakeWin, real_settings) -> None:
    """Windows sends PRESHUTDOWN first and waits for it longer than for SHUTDOWN."""
    path, settings = real_settings
    win.options[("DropScribe", "settings")] = str(path)
    svc = winservice.service_class()(("DropScribe",))
    assert svc.GetAcceptedControls() & winservice.SERVICE_ACCEPT_PRESHUTDOWN
    svc.SvcOtherEx(winservice.SERVICE_CONTROL_PRESHUTDOWN, 0, None)
    assert svc.reports[0] == (FakeWin.SERVICE_STOP_PENDING, winservice.STOP_WAIT_HINT_MS)
    thread, errors = _start_in_thread(svc)
    thread.join(timeout=30)
    assert not thread.is_alive() and errors == []
    assert ("Info", "DropScribe stopped") in win.events


def test_bad_settings_go_to_the_event_log_and_fail_the_service(
    win: FakeWin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    bad = write_settings(tmp_path / "bad", {"transcribe": {"task": "summarise"}})
    win.options[("DropScribe", "settings")] = str(bad)
    svc = winservice.DropScribeService(("DropScribe",))
    with pytest.raises(Exception, match="transcribe.task"):
        svc.SvcDoRun()  # raising makes pythonservice report an error → recovery restarts it
    [(kind, msg)] = win.events
    assert kind == "Error" and "transcribe.task" in msg and "summarise" in msg


def test_service_class_needs_pywin32_only_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "win32serviceutil", None)  # "not installed"
    with pytest.raises(ImportError):
        winservice.DropScribeService  # noqa: B018
    with pytest.raises(AttributeError):
        winservice.NoSuchThing  # noqa: B018


# ---- Linux: systemd ------------------------------------------------------------------------------
def test_systemd_unit_text_exactly() -> None:
    text = winservice.systemd_unit("/opt/venv/bin/python", Path("/srv/dropscribe/app.py"),
                                   Path("/srv/dropscribe/settings.yaml"), True)
    assert text == """\
[Unit]
Description=DropScribe watch-folder transcription service

[Service]
Type=simple
ExecStart=/opt/venv/bin/python /srv/dropscribe/app.py --settings /srv/dropscribe/settings.yaml
WorkingDirectory=/srv/dropscribe
Environment=PYTHONUNBUFFERED=1
Restart=on-failure
RestartSec=10
KillSignal=SIGINT
KillMode=mixed
TimeoutStopSec=60

[Install]
WantedBy=default.target
"""
    system = winservice.systemd_unit("/usr/bin/python3", Path("/opt/ds/app.py"),
                                     Path("/etc/dropscribe/settings.yaml"), False, run_as="ds")
    assert "Wants=network-online.target\nAfter=network-online.target\n" in system
    assert "WorkingDirectory=/etc/dropscribe\nUser=ds\n" in system
    assert system.endswith("[Install]\nWantedBy=multi-user.target\n")
    with pytest.raises(ValueError, match="absolute"):
        winservice.systemd_unit("python", Path("app.py"), Path("settings.yaml"), True)


def test_systemd_quoting_spaces_chinese_and_specials() -> None:
    py, app = "/home/李/语音 转写/venv/bin/python", Path("/home/李/语音 转写/app.py")
    settings = Path('/data/100% "final"/$HOME/设置.yaml')
    text = winservice.systemd_unit(py, app, settings, True)
    exec_line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert exec_line == ('ExecStart="/home/李/语音 转写/venv/bin/python" '
                         '"/home/李/语音 转写/app.py" --settings '
                         '"/data/100%% \\"final\\"/$$HOME/设置.yaml"')
    # systemd's word splitting (double quotes, C escapes) is shlex's for these characters
    words = shlex.split(exec_line[len("ExecStart="):].replace("%%", "%").replace("$$", "$"))
    assert words == [py, str(app), "--settings", str(settings)]
    assert "WorkingDirectory=/data/100%% \"final\"/$HOME\n" in text  # not split, no quotes
    with pytest.raises(ValueError, match="line break"):
        winservice.systemd_unit(py, app, Path("/a\nb/settings.yaml"), True)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_accepts_the_unit_with_spaces_and_chinese(tmp_path: Path) -> None:
    folder = tmp_path / "语音 转写"
    folder.mkdir()
    python = folder / "python 3"
    python.symlink_to(sys.executable)
    settings = write_settings(folder, {})
    unit = tmp_path / "dropscribe.service"
    for user_mode in (True, False):
        unit.write_text(winservice.systemd_unit(str(python), REPO / "app.py", settings,
                                                user_mode), encoding="utf-8")
        out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture
def systemctl(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []

    def fake_run(argv, check=False, **kw):  # noqa: ANN001, ANN202
        assert isinstance(argv, list) and not kw.get("shell")
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(winservice.subprocess, "run", fake_run)
    return calls


def test_linux_install_remove_start_stop_in_a_temp_unit_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, systemctl: list[list[str]],
    capsys: pytest.CaptureFixture,
) -> None:
    units = tmp_path / "units"
    monkeypatch.setenv(winservice.SYSTEMD_DIR_ENV, str(units))
    settings_path = write_settings(tmp_path / "站点 A", {})
    settings = load_settings(settings_path)

    def do(*argv: str) -> int:
        return winservice.run(settings, parse("service", *argv), platform="linux")

    assert do("install") == 0
    unit = units / "dropscribe.service"
    assert unit.read_text(encoding="utf-8") == winservice.systemd_unit(
        os.path.abspath(sys.executable), REPO / "app.py", settings_path.resolve(), True)
    out = capsys.readouterr().out
    assert "systemctl --user daemon-reload && systemctl --user enable --now dropscribe" in out
    assert "loginctl enable-linger" in out
    assert systemctl == []  # install only writes and explains

    assert do("start") == 0 and do("stop") == 0
    assert systemctl == [["systemctl", "--user", "start", "dropscribe"],
                         ["systemctl", "--user", "stop", "dropscribe"]]
    systemctl.clear()
    assert do("remove") == 0
    assert not unit.exists()
    assert systemctl == [["systemctl", "--user", "disable", "--now", "dropscribe"],
                         ["systemctl", "--user", "daemon-reload"]]
    assert do("remove") == 0 and "nothing to remove" in capsys.readouterr().out

    assert do("install", "--system", "--user", "dropscribe") == 0
    text = unit.read_text(encoding="utf-8")
    assert "User=dropscribe\n" in text and "WantedBy=multi-user.target" in text
    assert "sudo systemctl daemon-reload && sudo systemctl enable --now dropscribe" in \
        capsys.readouterr().out
    assert do("start", "--system") == 0
    assert systemctl[-1] == ["systemctl", "start", "dropscribe"]


def test_linux_default_unit_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(winservice.SYSTEMD_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert winservice.unit_dir(True) == tmp_path / "cfg" / "systemd" / "user"
    assert winservice.unit_dir(False) == Path("/etc/systemd/system")


def test_debug_runs_the_foreground_loop_like_app_py(
    monkeypatch: pytest.MonkeyPatch, settings  # noqa: ANN001
) -> None:
    import service.runner

    seen = []
    monkeypatch.setattr(service.runner, "run_foreground", lambda s: seen.append(s) or 0)
    assert winservice.run(settings, parse("service", "debug"), platform="linux") == 0
    assert seen == [settings]


def test_the_service_module_does_not_import_the_command_line() -> None:
    """cli imports winservice for `service …`; winservice must not import cli back."""
    import ast

    tree = ast.parse(Path(winservice.__file__).read_text(encoding="utf-8"))
    imported = {a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for a in node.names} | {node.module or "" for node in ast.walk(tree)
                                        if isinstance(node, ast.ImportFrom)}
    assert "cli" not in imported and "service.cli" not in imported


def test_other_systems_are_told_to_use_their_own_supervisor(
    settings, capsys: pytest.CaptureFixture  # noqa: ANN001
) -> None:
    assert winservice.run(settings, parse("service", "install"), platform="darwin") == 2
    err = capsys.readouterr().err
    assert "not supported" in err and "python app.py" in err


def test_parser_actions_options_and_settings_after_the_action(tmp_path: Path) -> None:
    args = parse("--settings", "/a/settings.yaml", "service", "install")
    assert (args.command, args.action, args.startup, args.settings) == (
        "service", "install", "auto", Path("/a/settings.yaml"))
    args = parse("service", "install", "--settings", "/b/s.yaml", "--startup", "manual")
    assert (args.settings, args.startup) == (Path("/b/s.yaml"), "manual")
    with pytest.raises(SystemExit):
        parse("service", "restart")
