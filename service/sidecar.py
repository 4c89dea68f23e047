"""Per-file choices from a sidecar `<file>.json` next to the audio file.

Validated strictly: unknown keys, wrong types or an unknown model fail that one task with a
reason the user can act on. A sidecar can never name a path: there is no key that takes one.
Decoding keys (chinese_script, glossary, beam_size, …) are those of settings.yaml's
`transcribe` section and are validated by the same model (`options.Decoding`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import catalog, options

MAX_SIDECAR_BYTES = 64 * 1024


class SidecarError(ValueError):
    """The sidecar is unreadable or invalid; the message says what to fix."""


class Sidecar(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[\w.\-]+$")
    language: str | None = Field(None, min_length=2, max_length=20, pattern=r"^[A-Za-z\-]+$")
    task: Literal["transcribe", "translate"] | None = None
    priority: int = Field(0, ge=-1000, le=1000)
    output_formats: list[Literal["txt", "srt", "vtt", "tsv", "json"]] | None = Field(
        None, min_length=1
    )
    # The file's decoding choices, validated by options.Decoding (not a key of the file).
    decoding: dict = Field(default_factory=dict, exclude=True)

    @property
    def initial_prompt(self) -> str | None:
        return self.decoding.get("initial_prompt")


def read_sidecar(path: Path, known_models: set[str]) -> Sidecar:
    try:
        if path.stat().st_size > MAX_SIDECAR_BYTES:
            raise SidecarError(f"the settings file {path.name} is larger than 64 KB")
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as err:
        raise SidecarError(f"cannot read {path.name}: {err}") from None
    except json.JSONDecodeError as err:
        raise SidecarError(
            f"{path.name} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from None
    if not isinstance(data, dict):
        raise SidecarError(f"{path.name} must hold a JSON object like {{\"model\": \"small\"}}")
    if "decoding" in data:
        raise SidecarError(f"{path.name} is invalid: decoding: unknown key")
    chosen = {k: data.pop(k) for k in list(data) if k in options.DECODING_KEYS}
    try:
        decoding = options.overrides(chosen)
    except options.OptionsError as err:
        raise SidecarError(f"{path.name} is invalid: {err}") from None
    try:
        sidecar = Sidecar.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or 'value'}: "
            + ("unknown key" if e["type"] == "extra_forbidden" else e["msg"])
            for e in err.errors()
        )
        raise SidecarError(f"{path.name} is invalid: {problems}") from None
    if sidecar.language:
        try:
            sidecar.language = catalog.language_code(sidecar.language)
        except ValueError as err:
            raise SidecarError(f"{path.name} is invalid: language: {err}") from None
    sidecar.decoding = decoding
    if sidecar.model and sidecar.model not in known_models:
        raise SidecarError(
            f"{path.name} names the model {sidecar.model!r}, which is not known; "
            f"use one of: {', '.join(sorted(known_models))}"
        )
    return sidecar
