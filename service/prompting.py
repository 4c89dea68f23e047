"""The initial prompt: a default per language, the user's own prompt and the glossary, merged.

Why a default: Whisper continues in the style of its prompt. Without one, Mandarin comes back
in Traditional or Simplified characters at random (even within one file) and with little or no
punctuation; a short, punctuated Simplified sentence steers it to Simplified with punctuation.
The prompt is carried to every window (`carry_initial_prompt`): without that, later windows
drifted back to Traditional. A glossary (names, product terms, mixed Chinese/English) goes into
the same prompt, which is how Whisper learns spellings it cannot guess.
"""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_PROMPTS: dict[str, str] = {
    "zh": "以下是普通话的会议记录，请使用简体中文和标点符号。",
    "yue": "以下是粤语的会议记录，请使用标点符号。",
}
_GLOSSARY_LEAD = {"zh": "术语：", "yue": "术语：", "ja": "用語：", "en": "Terms: "}
_SEPARATOR = {"zh": "、", "yue": "、", "ja": "、"}
# Whisper keeps at most the last ~223 prompt tokens; a long prompt pushes out the default.
MAX_PROMPT_CHARS = 600

__all__ = ["DEFAULT_PROMPTS", "build_prompt"]


def build_prompt(language: str | None, user_prompt: str | None,
                 glossary: Sequence[str] = ()) -> str | None:
    """The prompt for one file: the language default, the user's prompt, then the terms."""
    parts: list[str] = []
    for text in (DEFAULT_PROMPTS.get(language or "", ""), (user_prompt or "").strip()):
        if text and text not in parts:
            parts.append(text)
    terms = [t for t in glossary if t]
    if terms:
        lead = _GLOSSARY_LEAD.get(language or "", "Terms: ")
        sep = _SEPARATOR.get(language or "", ", ")
        end = "。" if language in _SEPARATOR else "."
        parts.append(lead + sep.join(terms) + end)
    prompt = ("" if language in _SEPARATOR else " ").join(parts).strip()
    return prompt[:MAX_PROMPT_CHARS] or None
