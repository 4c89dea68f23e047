"""How one file is decoded: the options settings.yaml's `transcribe` section and a sidecar share.

One pydantic model is the single definition of every decoding key, its type, range and default:
`config.TranscribeSettings` inherits it, and a sidecar's keys of the same names are validated by
it too (`overrides`), so a key, a limit or an error message can never differ between the two.
A worker gets the merged result (`resolve`): settings, then the file's own choices.

Defaults were chosen by measurement (README "Chinese recordings"): beam_size null = each
engine's default — openai-whisper greedy with temperature fallback (beam 5 costs it 4-5x the
time on a CPU and put segment ends past the end of a 40-s file), faster-whisper beam 5
(fasterwhisper.decoding: 1.2x, and better on the quality corpus) — the initial prompt carried
to every window instead of conditioning on the previous text (which lets one invented phrase
lock a loop), and voice activity detection on.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from . import catalog

MAX_SPEAKERS = 20
SCRIPT_ALIASES = {"simplified": "t2s", "traditional": "s2t"}
ORIGINAL = "original"
ENGINES = catalog.ENGINES
# CTranslate2's compute types (opennmt.net/CTranslate2/quantization.html); "auto" = GPU float16
# (int8_float16 with prefer_memory), CPU int8. Listed here so options never imports ctranslate2.
COMPUTE_TYPES = ("auto", "float16", "int8_float16", "int8", "int8_float32", "float32",
                 "bfloat16", "int8_bfloat16", "int16")

__all__ = ["COMPUTE_TYPES", "DECODING_KEYS", "ENGINES", "Decoding", "OptionsError",
           "opencc_config", "overrides", "resolve"]


class OptionsError(ValueError):
    """A decoding option has a wrong type or value; the message names the key."""


def _opencc_configs() -> set[str]:
    import opencc

    return {name.removesuffix(".json") for name in opencc.CONFIGS}


def opencc_config(chinese_script: str) -> str | None:
    """The OpenCC configuration for a `chinese_script` value; None for `original`."""
    if chinese_script == ORIGINAL:
        return None
    return SCRIPT_ALIASES.get(chinese_script, chinese_script)


class Decoding(BaseModel):
    """Every per-file decoding choice (settings default → sidecar override)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Which runtime decodes: openai-whisper (the default) or faster-whisper (CTranslate2).
    engine: Literal["openai-whisper", "faster-whisper"] = "openai-whisper"
    # faster-whisper only: CTranslate2 compute type, memory preference, batched inference
    # (BatchedInferencePipeline over the speech regions; 1 = one window after another, which
    # keeps temperature fallback).
    compute_type: Literal[COMPUTE_TYPES] = "auto"  # type: ignore[valid-type]
    prefer_memory: bool = False
    batch_size: int = Field(8, ge=1, le=64)
    # Chinese output script: simplified | traditional | original, or any OpenCC config name
    # (t2s, tw2sp, hk2s, s2twp, ...). Applied only when the language is Chinese.
    chinese_script: str = "simplified"
    initial_prompt: str | None = Field(None, max_length=2000)
    glossary: list[str] = Field(default_factory=list, max_length=200)
    # Languages detection may choose from (null = any the model knows).
    languages: list[str] | None = Field(None, min_length=1)
    vad: bool = True
    vad_threshold: float = Field(0.5, gt=0, lt=1)
    vad_min_silence_ms: int = Field(500, ge=0, le=10_000)
    vad_speech_pad_ms: int = Field(400, ge=0, le=5_000)
    vad_min_speech_ms: int = Field(250, ge=0, le=10_000)
    beam_size: int | None = Field(None, ge=1, le=10)
    best_of: int | None = Field(5, ge=1, le=10)
    temperature: float | list[float] = Field(
        default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    condition_on_previous_text: bool = False
    word_timestamps: bool = False
    no_speech_threshold: float | None = Field(0.6, ge=0, le=1)
    compression_ratio_threshold: float | None = Field(2.4, gt=0)
    hallucination_silence_threshold: float | None = Field(None, gt=0)
    # Speaker labels (speakers.py): off, auto (number estimated) or the number of speakers.
    speakers: Literal["off", "auto"] | int = "off"
    # Names for the labels, by speaker number: {"1": "张经理"} (a sidecar's, usually).
    speaker_names: dict[str, str] = Field(default_factory=dict, max_length=MAX_SPEAKERS)

    @field_validator("chinese_script")
    @classmethod
    def _known_script(cls, v: str) -> str:
        if v in (ORIGINAL, *SCRIPT_ALIASES) or v in _opencc_configs():
            return v
        raise ValueError(
            "allowed values are 'simplified', 'traditional', 'original' or an OpenCC "
            f"configuration ({', '.join(sorted(_opencc_configs()))}); got {v!r}")

    @field_validator("glossary")
    @classmethod
    def _clean_terms(cls, v: list[str]) -> list[str]:
        terms = [t.strip() for t in v if t and t.strip()]
        if any(len(t) > 100 for t in terms):
            raise ValueError("each term must be at most 100 characters")
        return list(dict.fromkeys(terms))

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [catalog.language_code(x) for x in v]

    @field_validator("temperature")
    @classmethod
    def _temperatures(cls, v: float | list[float]) -> float | list[float]:
        values = v if isinstance(v, list) else [v]
        if not values or any(not 0 <= t <= 1 for t in values):
            raise ValueError("temperatures must lie between 0 and 1")
        return v

    @field_validator("speakers", mode="before")
    @classmethod
    def _speakers(cls, v: Any) -> Any:
        # YAML 1.1 reads a bare `off` as false (and `on` as true).
        if isinstance(v, bool):
            return "auto" if v else "off"
        if isinstance(v, str) and v.strip().isdigit():
            v = int(v.strip())
        if isinstance(v, str) and v.strip().lower() in ("off", "auto"):
            return v.strip().lower()
        if not isinstance(v, int) or not 1 <= v <= MAX_SPEAKERS:
            raise ValueError(f"allowed values are 'off', 'auto' or a number of speakers from 1 "
                             f"to {MAX_SPEAKERS}; got {v!r}")
        return v

    @field_validator("speaker_names")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        out = {}
        for key, name in v.items():
            if not key.strip().isdigit() or not 1 <= int(key) <= MAX_SPEAKERS:
                raise ValueError(f"keys are speaker numbers 1 to {MAX_SPEAKERS} "
                                 f"(like \"1\"); got {key!r}")
            name = name.strip()
            if not name or len(name) > 100 or any(
                    ch in "<>" or not ch.isprintable() for ch in name):
                raise ValueError(f"speaker {key}: a name is 1 to 100 printable characters "
                                 "without < or >")
            out[str(int(key))] = name
        return out

    @model_validator(mode="after")
    def _silence_needs_words(self) -> Decoding:
        if self.hallucination_silence_threshold is not None and not self.word_timestamps:
            raise ValueError("hallucination_silence_threshold needs word_timestamps: true")
        return self

    @property
    def opencc(self) -> str | None:
        return opencc_config(self.chinese_script)

    def whisper_options(self) -> dict[str, Any]:
        """Keyword arguments for the engines' decoding (both take the same names)."""
        temperature = self.temperature
        return {
            "beam_size": self.beam_size,
            "best_of": self.best_of,
            "temperature": tuple(temperature) if isinstance(temperature, list) else temperature,
            "condition_on_previous_text": self.condition_on_previous_text,
            "word_timestamps": self.word_timestamps,
            "no_speech_threshold": self.no_speech_threshold,
            "compression_ratio_threshold": self.compression_ratio_threshold,
            "hallucination_silence_threshold": self.hallucination_silence_threshold,
        }


DECODING_KEYS = frozenset(Decoding.model_fields)


def _problems(err: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(x) for x in e['loc']) or 'value'}: "
        + ("unknown key" if e["type"] == "extra_forbidden" else e["msg"])
        for e in err.errors())


def overrides(data: dict[str, Any]) -> dict[str, Any]:
    """Validate a sidecar's decoding keys on their own; the validated values, as JSON data."""
    try:
        checked = Decoding.model_validate(data)
    except ValidationError as err:
        raise OptionsError(_problems(err)) from None
    return checked.model_dump(mode="json", include=set(data))


def resolve(defaults: Decoding, chosen: dict[str, Any]) -> Decoding:
    """The settings' decoding options with a task's own choices on top."""
    base = defaults.model_dump(mode="json", include=DECODING_KEYS)
    try:
        return Decoding.model_validate({**base, **{k: v for k, v in chosen.items()
                                                  if k in DECODING_KEYS}})
    except ValidationError as err:
        raise OptionsError(_problems(err)) from None
