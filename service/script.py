"""Chinese script control with OpenCC: one script for the whole transcript, every format.

Whisper's `zh` output drifts between Traditional and Simplified characters, even inside one file.
A prompt makes one script likely; converting every piece of text afterwards makes it certain.
The default `t2s` converts characters and keeps the speaker's own words (软体 stays 软体);
`tw2sp` also swaps Taiwanese vocabulary for mainland words (软件) and is opt-in.
"""

from __future__ import annotations

from typing import Any

from . import catalog

__all__ = ["applies", "convert_result"]


def applies(language: str | None) -> bool:
    """Script conversion is for Chinese transcripts only (Mandarin `zh`, Cantonese `yue`)."""
    return language in catalog.CHINESE


def convert_result(result: dict[str, Any], config: str) -> int:
    """Convert the text of every segment and word in place; returns how many segments changed.

    The transcript's `text` is rebuilt from the segments by the caller (postprocess), so txt,
    srt, vtt, tsv and json all read the converted text.
    """
    import opencc

    converter = opencc.OpenCC(config)
    changed = 0
    for seg in result.get("segments", []):
        text = converter.convert(seg.get("text", ""))
        if text != seg.get("text", ""):
            changed += 1
        seg["text"] = text
        for word in seg.get("words") or []:
            word["word"] = converter.convert(word.get("word", ""))
    result["text"] = converter.convert(result.get("text", ""))
    return changed
