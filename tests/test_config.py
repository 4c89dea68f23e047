"""settings.yaml loading: partial files, validation messages, path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import DEFAULT_SETTINGS, SettingsError, load_settings
from tests.conftest import write_settings


def test_shipped_settings_file_is_valid_and_complete() -> None:
    s = load_settings(DEFAULT_SETTINGS)
    assert s.models.default == "turbo" and s.gpu.max_utilization == 0.9
    assert s.inbox == DEFAULT_SETTINGS.parent / "inbox"


def test_partial_file_keeps_defaults_and_paths_follow_the_file(tmp_path: Path, monkeypatch) -> None:
    path = write_settings(tmp_path / "配置 目录", {"models": {"default": "tiny.en"}})
    monkeypatch.chdir("/")  # like a Windows service started in System32
    s = load_settings(path)
    assert s.models.default == "tiny.en"
    assert s.scheduler.max_attempts == 3
    assert s.inbox == (tmp_path / "配置 目录" / "inbox").resolve()
    db_file = (tmp_path / "配置 目录" / "data" / "tasks.db").as_posix()
    assert s.database_url == f"sqlite:///{db_file}"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"gpu": {"max_utilization": 0.95}}, "gpu.max_utilization"),
        ({"transcribe": {"task": "summarise"}}, "allowed values are 'transcribe' or 'translate'"),
        ({"transcribe": {"output_formats": ["docx"]}}, "transcribe.output_formats"),
        ({"watcher": {"stable_secs": 3}}, "watcher.stable_secs: unknown setting"),
        ({"scheduler": {"max_attempts": "many"}}, "scheduler.max_attempts"),
        ({"database": {"url": "mysql://x"}}, "database.url"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, data: dict, needle: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(write_settings(tmp_path, data))
    assert needle in str(err.value)


def test_outbox_inside_inbox_is_refused(tmp_path: Path) -> None:
    path = write_settings(tmp_path, {"paths": {"inbox": "in", "outbox": "in/out"}})
    with pytest.raises(SettingsError, match="paths.outbox .* is inside paths.inbox"):
        load_settings(path)


def test_broken_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "settings.yaml"
    bad.write_text("paths: [unclosed", encoding="utf-8")
    with pytest.raises(SettingsError, match="cannot read settings file"):
        load_settings(bad)
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "nope.yaml")


def test_a_settings_file_that_is_not_utf8_says_save_as_utf8(tmp_path: Path) -> None:
    bad = tmp_path / "settings.yaml"
    bad.write_bytes("paths:\n  inbox: D:/会议/inbox\n".encode("gbk"))  # Notepad's ANSI on zh-CN
    with pytest.raises(SettingsError, match="save it as UTF-8"):
        load_settings(bad)
    bom = tmp_path / "bom.yaml"
    bom.write_bytes("models:\n  default: tiny.en\n".encode("utf-8-sig"))
    assert load_settings(bom).models.default == "tiny.en"


@pytest.mark.parametrize("line", ['  inbox: "D:\\会议\\new inbox"', '  inbox: "C:\\Users\\x"',
                                  '  inbox: "\\\\server\\share\\inbox"'])
def test_a_double_quoted_windows_path_says_use_single_quotes(tmp_path: Path, line: str) -> None:
    """In YAML double quotes `\\n` is a newline and `\\U` an error: the path a user copied
    from Explorer would silently become another one."""
    path = tmp_path / "settings.yaml"
    path.write_text(f"paths:\n{line}\n", encoding="utf-8")
    with pytest.raises(SettingsError) as err:
        load_settings(path)
    assert "paths.inbox" in str(err.value) and "single quotes" in str(err.value)


def test_windows_paths_written_the_safe_ways_load(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("paths:\n  inbox: 'D:\\会议\\new'\n  outbox: \"D:\\\\会议\\\\out\"\n"
                    "  archive: D:/会议/archive\n", encoding="utf-8")
    s = load_settings(path)
    assert str(s.paths.inbox) == "D:\\会议\\new" and str(s.paths.outbox) == "D:\\会议\\out"
