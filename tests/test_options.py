"""Decoding options: one definition for settings.yaml and sidecars, validated with clear errors;
the prompt built from them; the language list the parent validates against."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service import catalog, options, prompting
from service.config import SettingsError, load_settings
from service.sidecar import SidecarError, read_sidecar
from tests.conftest import write_settings

KNOWN = {"tiny.en", "base", "small"}


def sidecar(tmp_path: Path, data: dict):
    path = tmp_path / "会议.mp3.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return read_sidecar(path, KNOWN)


def test_defaults_are_the_measured_ones() -> None:
    d = options.Decoding()
    assert d.chinese_script == "simplified" and d.opencc == "t2s"
    assert d.vad is True and d.condition_on_previous_text is False and d.beam_size is None
    kw = d.whisper_options()
    assert kw["temperature"] == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0) and kw["best_of"] == 5
    assert set(kw) == {"beam_size", "best_of", "temperature", "condition_on_previous_text",
                       "word_timestamps", "no_speech_threshold", "compression_ratio_threshold",
                       "hallucination_silence_threshold"}


@pytest.mark.parametrize(("script", "config"), [
    ("simplified", "t2s"), ("traditional", "s2t"), ("original", None), ("tw2sp", "tw2sp"),
    ("s2twp", "s2twp"), ("hk2s", "hk2s")])
def test_script_names_and_opencc_configs(script: str, config: str | None) -> None:
    assert options.Decoding(chinese_script=script).opencc == config


@pytest.mark.parametrize(("data", "needle"), [
    ({"chinese_script": "klingon"}, "chinese_script: Value error, allowed values are "
                                    "'simplified', 'traditional', 'original'"),
    ({"chinese_script": "../../etc/t2s"}, "chinese_script"),
    ({"beam_size": 0}, "beam_size: Input should be greater than or equal to 1"),
    ({"beam_size": "five"}, "beam_size"),
    ({"best_of": 11}, "best_of"),
    ({"temperature": [0.0, 1.5]}, "temperature: Value error, temperatures must lie between"),
    ({"condition_on_previous_text": "maybe"}, "condition_on_previous_text"),
    ({"no_speech_threshold": 2}, "no_speech_threshold"),
    ({"compression_ratio_threshold": -1}, "compression_ratio_threshold"),
    ({"hallucination_silence_threshold": 2.0},
     "hallucination_silence_threshold needs word_timestamps: true"),
    ({"glossary": ["x" * 101]}, "glossary: Value error, each term must be at most 100"),
    ({"glossary": "张经理"}, "glossary: Input should be a valid list"),
    ({"languages": ["zh", "zz"]}, "languages: Value error, unknown language 'zz'"),
    ({"vad_threshold": 1.5}, "vad_threshold"),
])
def test_bad_values_fail_with_the_key_named_in_settings_and_sidecars(
        tmp_path: Path, data: dict, needle: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(write_settings(tmp_path / "s", {"transcribe": data}))
    key = needle.split(":")[0].split()[0]
    assert f"transcribe.{key}" in str(err.value) or f"transcribe: {key}" in str(err.value)
    with pytest.raises(SidecarError) as err:
        sidecar(tmp_path, data)
    assert needle in str(err.value) and "会议.mp3.json is invalid" in str(err.value)


def test_sidecar_keeps_only_what_it_sets_and_settings_fill_the_rest(tmp_path: Path) -> None:
    sc = sidecar(tmp_path, {"language": "Chinese", "chinese_script": "traditional",
                            "glossary": [" 张经理 ", "DropScribe", "张经理", ""],
                            "beam_size": 5, "initial_prompt": "季度会议"})
    assert sc.language == "zh"
    assert sc.decoding == {"chinese_script": "traditional", "glossary": ["张经理", "DropScribe"],
                           "beam_size": 5, "initial_prompt": "季度会议"}
    assert sc.decoding["initial_prompt"] == "季度会议"
    settings = load_settings(write_settings(tmp_path / "s", {"transcribe": {
        "glossary": ["Kubernetes"], "vad": False, "word_timestamps": True}}))
    merged = options.resolve(settings.transcribe, sc.decoding)
    assert merged.glossary == ["张经理", "DropScribe"]  # the file's list replaces the default
    assert merged.vad is False and merged.word_timestamps is True and merged.beam_size == 5
    assert options.resolve(settings.transcribe, {"output_stem": "x"}).beam_size is None


def test_sidecar_cannot_smuggle_unvalidated_options(tmp_path: Path) -> None:
    with pytest.raises(SidecarError, match="decoding: unknown key"):
        sidecar(tmp_path, {"decoding": {"beam_size": 99}})
    with pytest.raises(SidecarError, match="patience: unknown key"):
        sidecar(tmp_path, {"patience": 2})
    assert sidecar(tmp_path, {"language": "zz"}).language == "zz"  # the watcher refuses it


def test_settings_language_codes_are_checked(tmp_path: Path) -> None:
    assert load_settings(write_settings(tmp_path / "a", {"transcribe": {
        "language": "Mandarin", "languages": ["ZH", "english"]}})).transcribe.languages == [
        "zh", "en"]
    with pytest.raises(SettingsError, match="transcribe.language: Value error, unknown language"):
        load_settings(write_settings(tmp_path / "b", {"transcribe": {"language": "xx"}}))


def test_language_table_is_whisper_s_own() -> None:
    from whisper.tokenizer import LANGUAGES

    assert catalog.whisper_languages()[0] == tuple(LANGUAGES)
    assert catalog.CHINESE <= set(LANGUAGES)
    assert [catalog.language_code(x) for x in ("Chinese", "zh-CN", "Cantonese", "EN")] == [
        "zh", "zh", "yue", "en"]


def test_prompt_default_user_prompt_and_glossary_merge() -> None:
    zh = prompting.DEFAULT_PROMPTS["zh"]
    assert prompting.build_prompt("zh", None) == zh
    assert prompting.build_prompt("zh", "本季度销售会议。", ["张经理", "DropScribe"]) == (
        zh + "本季度销售会议。术语：张经理、DropScribe。")
    assert prompting.build_prompt("zh", zh) == zh  # not twice
    assert prompting.build_prompt("en", None) is None
    assert prompting.build_prompt("en", "A sales meeting.", ["Kubernetes", "张经理"]) == (
        "A sales meeting. Terms: Kubernetes, 张经理.")
    assert prompting.build_prompt(None, None, ["DropScribe"]) == "Terms: DropScribe."
    assert len(prompting.build_prompt("zh", "长" * 5000)) == prompting.MAX_PROMPT_CHARS


def test_speakers_off_auto_or_a_number_in_settings_and_sidecars(tmp_path: Path) -> None:
    """YAML reads a bare `off` as false: it still means off. A sidecar may say "2" or 2."""
    (tmp_path / "a").mkdir()
    path = tmp_path / "a" / "settings.yaml"
    path.write_text("transcribe:\n  speakers: off\n", encoding="utf-8")
    assert load_settings(path).transcribe.speakers == "off"
    path.write_text("transcribe:\n  speakers: auto\n", encoding="utf-8")
    assert load_settings(path).transcribe.speakers == "auto"
    assert sidecar(tmp_path, {"speakers": "2"}).decoding == {"speakers": 2}
    assert sidecar(tmp_path, {"speakers": 3}).decoding == {"speakers": 3}
    names = sidecar(tmp_path, {"speaker_names": {"1": " 张经理 ", "02": "李娜"}})
    assert names.decoding == {"speaker_names": {"1": "张经理", "2": "李娜"}}
    for bad, words in [({"speakers": 0}, "speakers: "), ({"speakers": "many"}, "'auto'"),
                       ({"speaker_names": {"one": "x"}}, "speaker numbers"),
                       ({"speaker_names": {"1": "<b>x</b>"}}, "without < or >"),
                       ({"speaker_names": {"1": "a\nb"}}, "printable")]:
        with pytest.raises(SidecarError, match="speaker") as err:
            sidecar(tmp_path, bad)
        assert words in str(err.value)
    path.write_text("transcribe:\n  speakers: 50\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="transcribe.speakers"):
        load_settings(path)


def test_engine_choice_in_settings_and_sidecars(tmp_path: Path) -> None:
    """transcribe.engine (and compute_type, prefer_memory, batch_size) in settings.yaml; a
    sidecar's `engine` overrides it for one file; a wrong value names the key."""
    s = load_settings(write_settings(tmp_path / "a", {"transcribe": {
        "engine": "faster-whisper", "compute_type": "int8_float16", "batch_size": 4}}))
    assert s.transcribe.engine == "faster-whisper" and s.transcribe.batch_size == 4
    assert options.resolve(s.transcribe, {"engine": "openai-whisper"}).engine == "openai-whisper"
    assert options.Decoding().engine == "openai-whisper"  # the design's default engine
    assert sidecar(tmp_path, {"engine": "faster-whisper"}).decoding == {
        "engine": "faster-whisper"}
    with pytest.raises(SettingsError, match="transcribe.engine"):
        load_settings(write_settings(tmp_path / "b", {"transcribe": {"engine": "whisper.cpp"}}))
    with pytest.raises(SidecarError, match="compute_type"):
        sidecar(tmp_path, {"compute_type": "int4"})
    with pytest.raises(SidecarError, match="batch_size"):
        sidecar(tmp_path, {"batch_size": 0})
