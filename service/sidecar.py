"""Per-file choices from a sidecar `<file>.json` next to the audio file.

Validated strictly: unknown keys, wrong types or an unknown model fail that one task with a
reason the user can act on. A sidecar can never name a path: there is no key that takes one.
Decoding keys (chinese_script, glossary, beam_size, …) are those of settings.yaml's
`transcribe` section and are validated by the same model (`options.Decoding`).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import catalog, options
from .fsops import NotRegularFileError, read_regular

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


def read_sidecar(path: Path, known_models: set[str]) -> Sidecar:
    # Never through a link (it could point at a private file, or at one whose read blocks),
    # only a regular file, at most 64 KB: a sidecar can neither leak nor freeze the watcher.
    try:
        raw = read_regular(path, MAX_SIDECAR_BYTES)
    except NotRegularFileError as err:
        raise SidecarError(
            f"the settings file {path.name} is not a plain file ({err.strerror}); "
            "copy the file itself, not a link or a pipe"
        ) from None
    except ValueError:
        raise SidecarError(f"the settings file {path.name} is larger than 64 KB") from None
    except OSError as err:
        raise SidecarError(f"cannot read {path.name}: {err.strerror or err}") from None
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise SidecarError(f"cannot read {path.name}: it is not UTF-8 text (byte {err.start}); "
                           "save it as UTF-8") from None
    except json.JSONDecodeError as err:
        raise SidecarError(
            f"{path.name} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from None
    except RecursionError:
        raise SidecarError(f"{path.name} is nested too deeply to be a settings file") from None
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
        with contextlib.suppress(ValueError):  # an unknown one is refused by the watcher
            sidecar.language = catalog.language_code(sidecar.language)
    sidecar.decoding = decoding
    if sidecar.model and sidecar.model not in known_models:
        raise SidecarError(
            f"{path.name} names the model {sidecar.model!r}, which is not known; "
            f"use one of: {', '.join(sorted(known_models))}"
        )
    return sidecar
