"""The log file: one line per message, whatever a file name holds."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from service import logs


@pytest.fixture
def log_file(tmp_path: Path):
    path = logs.setup(tmp_path / "logs", console=False)
    yield path
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_dropscribe", False):
            root.removeHandler(h)
            h.close()


def test_a_file_name_cannot_forge_log_lines_or_send_terminal_escapes(log_file: Path) -> None:
    name = "talk.wav\n2026-12-01 09:00:00,000 ERROR   service: forged\x1b[31m"
    logging.getLogger("service.watcher").warning("%s cannot be transcribed: %s", name, "boom")
    logging.getLogger("service.watcher").info("会议 记录 %s", "第 1 组.mp3")
    for h in logging.getLogger().handlers:
        h.flush()
    lines = log_file.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2, lines
    assert "\x1b" not in lines[0] and "talk.wav\\n2026-12-01" in lines[0]
    assert lines[1].endswith("会议 记录 第 1 组.mp3")  # ordinary (Chinese) text is unchanged
