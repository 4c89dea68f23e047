"""Sidecar reading: a file saved in the wrong encoding says how to fix it."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.sidecar import SidecarError, read_sidecar


def test_a_sidecar_that_is_not_utf8_says_save_as_utf8(tmp_path: Path) -> None:
    side = tmp_path / "会议.mp3.json"
    side.write_bytes('{"glossary": ["张经理"]}'.encode("gbk"))  # Notepad's ANSI on zh-CN
    with pytest.raises(SidecarError, match="save it as UTF-8"):
        read_sidecar(side, {"tiny.en"})
    side.write_bytes('{"glossary": ["张经理"]}'.encode("utf-8-sig"))
    assert read_sidecar(side, {"tiny.en"}).decoding["glossary"] == ["张经理"]
