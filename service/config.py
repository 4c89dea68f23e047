"""Settings: load settings.yaml, validate it, resolve paths.

Why pydantic: a user who mistypes a key or a value gets one clear line naming the key and the
allowed values, instead of a crash hours later. Relative paths resolve against the settings
file's folder, never the current directory (a Windows service starts in System32).
"""

from __future__ import annotations

import ipaddress
import locale
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from . import catalog
from .options import Decoding

DEFAULT_SETTINGS = Path(__file__).resolve().parent.parent / "settings.yaml"
ENV_SETTINGS = "DROPSCRIBE_SETTINGS"
OUTPUT_FORMATS = ("txt", "srt", "vtt", "tsv", "json")


class SettingsError(Exception):
    """The settings file is missing, unreadable or invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PathsSettings(_Section):
    inbox: Path = Path("inbox")
    outbox: Path = Path("outbox")
    archive: Path = Path("archive")
    failed: Path = Path("failed")
    logs: Path = Path("logs")
    uploads: Path = Path("uploads")


class DatabaseSettings(_Section):
    url: str = "sqlite:///data/tasks.db"

    @field_validator("url")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if not (v.startswith("sqlite:") or v.startswith("postgresql")):
            raise ValueError("must start with sqlite:/// or postgresql+psycopg://")
        return v


class ModelsSettings(_Section):
    dir: Path = Path("models")
    default: str = Field("turbo", min_length=1)
    keep_warm_seconds: float = Field(0, ge=0)
    allow_download: bool = True


class TranscribeSettings(Decoding):
    """`transcribe:` — the decoding options (options.Decoding, shared with sidecars) and more."""

    language: str | None = None
    task: Literal["transcribe", "translate"] = "transcribe"
    output_formats: list[Literal["txt", "srt", "vtt", "tsv", "json"]] = Field(
        default_factory=lambda: ["txt", "srt", "vtt", "json"], min_length=1
    )
    max_audio_seconds: float = Field(6 * 3600, gt=0)

    @field_validator("language")
    @classmethod
    def _known_language(cls, v: str | None) -> str | None:
        return None if v is None else catalog.language_code(v)


class WatcherSettings(_Section):
    stable_seconds: float = Field(2.0, ge=0)
    # a file another program still holds open (a stalled copy, a cloud sync) waits this long
    held_timeout_seconds: float = Field(1800, gt=0)
    rescan_seconds: float = Field(30, gt=0)
    polling: bool = False
    ignore: list[str] = Field(default_factory=lambda: ["*.part", "*.tmp", "~$*", ".*"])


class SchedulerSettings(_Section):
    interval_seconds: float = Field(1.0, gt=0)
    max_attempts: int = Field(3, ge=1)
    backoff_seconds: float = Field(30, ge=0)
    lease_seconds: float = Field(60, gt=0)
    progress_seconds: float = Field(2.0, gt=0)
    prestart_workers: int = Field(1, ge=0, le=8)
    # how workers start: auto = forkserver where there is one (Linux, macOS), else spawn
    # (Windows); spawn everywhere runs the Windows way (slower start, hidden by prestarting)
    start_method: Literal["auto", "spawn", "forkserver"] = "auto"
    timeout_factor: float = Field(3.0, gt=0)
    timeout_min_seconds: float = Field(600, gt=0)


class GpuSettings(_Section):
    devices: Literal["all", "none"] | list[int] = "all"
    max_utilization: float = Field(0.9, gt=0, le=0.9)
    reserved_mb: int = Field(1024, ge=0)
    max_tasks_per_gpu: int = Field(5, ge=1)
    confidence_factor: float = Field(1.2, ge=1.0)
    calibration_samples: int = Field(20, ge=1, le=1000)
    calibration_k: float = Field(3.0, ge=0)
    simulate: list[int] | None = None


class CpuSettings(_Section):
    max_concurrent_tasks: int = Field(1, ge=1)
    threads_per_task: int = Field(0, ge=0)


class MemorySettings(_Section):
    """Host RAM: long files in pieces, and tasks started only when their memory fits."""

    piece_minutes: float = Field(10, ge=0)
    reserve_mb: int = Field(2048, ge=0)


class SummarySettings(_Section):
    """`summary:` — minutes from the user's own OpenAI-compatible chat server (minutes.py)."""

    enabled: bool = False
    url: str = Field("http://127.0.0.1:9997/v1", min_length=1)  # …/v1 (Xinference, vLLM, …)
    model: str | None = Field(None, min_length=1, max_length=200)
    api_key: SecretStr | None = None
    language: str = "auto"  # auto: the transcript's language; or zh, en, …
    prompt_file: Path | None = None  # your own instructions (UTF-8 text) instead of ours
    context_tokens: int = Field(8192, ge=1024, le=2_000_000)  # the model's context window
    timeout_seconds: float = Field(300, gt=0)
    max_attempts: int = Field(5, ge=1, le=100)
    backoff_seconds: float = Field(60, ge=0)  # doubles after each failed try

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https:// (e.g. http://127.0.0.1:9997/v1)")
        return v.rstrip("/")

    @field_validator("language")
    @classmethod
    def _language(cls, v: str) -> str:
        return v if v == "auto" else catalog.language_code(v)

    @model_validator(mode="after")
    def _model_named(self) -> SummarySettings:
        if self.enabled and not self.model:
            raise ValueError("summary.model: name the model your server runs (summary is "
                             "enabled)")
        return self


class UiSettings(_Section):
    language: Literal["en", "zh-CN"] | None = None


def is_loopback(host: str) -> bool:
    """127.0.0.1, ::1, localhost: reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class HttpSettings(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    password: SecretStr | None = Field(None, min_length=8)
    token: SecretStr | None = Field(None, min_length=16)
    allowed_hosts: list[str] = Field(default_factory=list)
    max_upload_mb: float = Field(2048, gt=0)

    @model_validator(mode="after")
    def _login_off_loopback(self) -> HttpSettings:
        """Anything but loopback is reachable by the whole network: never without a login."""
        if self.enabled and not is_loopback(self.host) and not (self.password or self.token):
            raise ValueError(
                f"http.host is {self.host!r}, which other computers can reach, but neither "
                "http.password nor http.token is set: set one (or use http.host: 127.0.0.1)"
            )
        return self


class Settings(_Section):
    paths: PathsSettings = Field(default_factory=PathsSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    models: ModelsSettings = Field(default_factory=ModelsSettings)
    transcribe: TranscribeSettings = Field(default_factory=TranscribeSettings)
    watcher: WatcherSettings = Field(default_factory=WatcherSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    gpu: GpuSettings = Field(default_factory=GpuSettings)
    cpu: CpuSettings = Field(default_factory=CpuSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    ui: UiSettings = Field(default_factory=UiSettings)
    summary: SummarySettings = Field(default_factory=SummarySettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)
    source: Path | None = Field(None, exclude=True)

    def resolve(self, p: Path) -> Path:
        """Absolute path: relative ones hang off the settings file's folder."""
        p = Path(os.path.expandvars(os.path.expanduser(str(p))))
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    @property
    def inbox(self) -> Path:
        return self.resolve(self.paths.inbox)

    @property
    def outbox(self) -> Path:
        return self.resolve(self.paths.outbox)

    @property
    def archive(self) -> Path:
        return self.resolve(self.paths.archive)

    @property
    def failed(self) -> Path:
        return self.resolve(self.paths.failed)

    @property
    def logs(self) -> Path:
        return self.resolve(self.paths.logs)

    @property
    def uploads(self) -> Path:
        return self.resolve(self.paths.uploads)

    @property
    def models_dir(self) -> Path:
        return self.resolve(self.models.dir)

    @property
    def database_url(self) -> str:
        """The URL with a relative SQLite file made absolute against base_dir."""
        url = self.database.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith("sqlite:////") and ":memory:" not in url:
            rest = url[len(prefix):]
            path, _, query = rest.partition("?")
            if not Path(path).is_absolute():
                url = prefix + (self.base_dir / path).resolve().as_posix()
                url += f"?{query}" if query else ""
        return url

    @property
    def sqlite_path(self) -> Path | None:
        url = self.database_url
        if url.startswith("sqlite:///"):
            return Path(url[len("sqlite:///"):].partition("?")[0])
        return None

    @property
    def summary_prompt_file(self) -> Path | None:
        return None if self.summary.prompt_file is None else self.resolve(self.summary.prompt_file)

    @property
    def ui_language(self) -> str:
        if self.ui.language:
            return self.ui.language
        lang = (locale.getlocale()[0] or os.environ.get("LANG") or "").lower()
        return "zh-CN" if lang.startswith("zh") or "chinese" in lang else "en"

    def check_folders(self) -> None:
        """Refuse layouts that would loop: outbox/archive/failed inside the inbox."""
        inbox = self.inbox
        real_inbox = Path(os.path.realpath(inbox))  # an inbox given through a link is its target
        for name in ("outbox", "archive", "failed", "uploads"):
            other = getattr(self, name)
            real = Path(os.path.realpath(other))
            if real == real_inbox or real_inbox in real.parents:
                raise SettingsError(
                    f"paths.{name} ({other}) is inside paths.inbox ({inbox}); "
                    "it must be a separate folder, or finished files would be picked up again"
                )


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"] if not isinstance(p, int)) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown setting (check the spelling; see settings.yaml)")
            continue
        msg = e["msg"]
        if e["type"] == "literal_error":
            msg = msg.replace("Input should be", "allowed values are")
        if e["type"] == "value_error" and isinstance(e.get("input"), dict):
            sentence = str(e["ctx"]["error"])  # a section's own check: its sentence says all
            lines.append(sentence if sentence.startswith(key) else f"{key}: {sentence}")
        elif key.endswith(("password", "token")):  # never echo a secret into a log
            lines.append(f"{key}: {msg}")
        else:
            lines.append(f"{key}: {msg} (got {e.get('input')!r})")
    return "invalid settings:\n  " + "\n  ".join(lines)


def settings_from_dict(
    data: dict[str, Any], base_dir: Path, source: Path | None = None
) -> Settings:
    try:
        settings = Settings.model_validate(data or {})
    except ValidationError as err:
        where = f" in {source}" if source else ""
        msg = _format_error(err).replace("invalid settings", f"invalid settings{where}", 1)
        raise SettingsError(msg) from None
    settings.base_dir = base_dir.resolve()
    settings.source = source
    settings.check_folders()
    return settings


_SECTION = re.compile(r"^([\w-]+):\s*(#.*)?$")
_DOUBLE_QUOTED = re.compile(r'^(\s*)(?:-\s*)?([\w.-]+):\s*"([^"\n]*)"')


def _double_quoted_backslash(text: str) -> str | None:
    """``inbox: "D:\\会议\\new"`` in YAML is D:, an escape, 会议, a newline, ``ew``: a path
    copied from Explorer silently becomes another one. Name the key and say what works."""
    section = None
    for line in text.splitlines():
        top = _SECTION.match(line)
        if top:
            section = top.group(1)
            continue
        m = _DOUBLE_QUOTED.match(line)
        if m and "\\" in m.group(3).replace("\\\\", ""):
            key = f"{section}.{m.group(2)}" if m.group(1) and section else m.group(2)
            return (f"{key}: \"{m.group(3)}\" is in double quotes, where YAML reads a backslash "
                    f"as an escape; use single quotes ('{m.group(3)}') or forward slashes")
    return None


def load_settings(path: Path | str | None = None) -> Settings:
    """Load a settings file; any key it leaves out keeps its default."""
    if path is None:
        path = os.environ.get(ENV_SETTINGS) or DEFAULT_SETTINGS
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise SettingsError(f"settings file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")  # Notepad's BOM is fine
    except UnicodeDecodeError as err:
        raise SettingsError(
            f"cannot read settings file {path}: it is not UTF-8 text (byte {err.start}); "
            "open it in an editor and save it as UTF-8") from None
    except OSError as err:
        raise SettingsError(f"cannot read settings file {path}: {err}") from None
    problem = _double_quoted_backslash(text)
    if problem:
        raise SettingsError(f"invalid settings in {path}:\n  {problem}")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SettingsError(f"cannot read settings file {path}: {err}") from None
    if data is not None and not isinstance(data, dict):
        raise SettingsError(f"{path}: expected sections like 'paths:' and 'models:' at the top")
    return settings_from_dict(data or {}, path.parent, path)
