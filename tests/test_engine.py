"""service.engine on real openai-whisper with the imported tiny.en weights (CPU; GPU if any)."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import tqdm
import whisper

from service import engine
from service.engine import ModelNotAvailable, cast_for_gpu, load_model, resolve_model, transcribe
from tests.fixtures_models import REPO, SENTENCE, normalize_words

TRANSCRIBE_MODULE = importlib.import_module("whisper.transcribe")


def _place(checkpoint: Path, models_dir: Path, name: str) -> Path:
    """Put the cached checkpoint into a models folder (hard link when possible: no copy)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    dest = models_dir / f"{name}.pt"
    try:
        os.link(checkpoint, dest)
    except OSError:
        shutil.copy(checkpoint, dest)
    return dest


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Any download attempt fails like an offline machine, and is recorded."""
    attempts: list[str] = []

    def offline(url: object, *args: object, **kwargs: object) -> None:
        attempts.append(str(url))
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    return attempts


def _expected_mask(pairs: list[list[int]]) -> torch.Tensor:
    mask = torch.zeros(4, 6, dtype=torch.bool)
    for layer, head in pairs:
        mask[layer, head] = True
    return mask


# --------------------------------------------------------------------------- resolve / load


def test_resolve_model(tmp_path: Path) -> None:
    assert resolve_model("tiny.en", tmp_path) is None
    (tmp_path / "tiny.en.pt").write_bytes(b"x")
    assert resolve_model("tiny.en", tmp_path) == tmp_path / "tiny.en.pt"


@pytest.mark.parametrize("name, allow_download", [("small", False), ("my-finetune", True)])
def test_missing_model_says_what_to_put_where(
    name: str, allow_download: bool, tmp_path: Path, no_network: list[str]
) -> None:
    models_dir = tmp_path / "models dir"
    with pytest.raises(ModelNotAvailable) as info:
        load_model(name, models_dir, "cpu", allow_download=allow_download)
    message = str(info.value)
    assert str(models_dir) in message
    assert f"Put {name}.pt there" in message
    assert f"python app.py models import <folder> --name {name}" in message
    assert no_network == []


@pytest.mark.parametrize("name", ["../tiny.en", "sub/tiny.en", ".hidden", "", "C:tiny"])
def test_path_like_names_never_leave_the_models_dir(name: str, tmp_path: Path) -> None:
    (tmp_path / "tiny.en.pt").write_bytes(b"x")
    models_dir = tmp_path / "models"
    assert resolve_model(name, models_dir) is None
    with pytest.raises(ModelNotAvailable, match="is not a model name"):
        load_model(name, models_dir, "cpu", allow_download=True)


def test_failed_download_becomes_model_not_available(
    tmp_path: Path, no_network: list[str]
) -> None:
    with pytest.raises(ModelNotAvailable, match="downloading it failed") as info:
        load_model("tiny.en", tmp_path, "cpu", allow_download=True)
    assert str(tmp_path) in str(info.value)
    assert len(no_network) == 1
    assert list(tmp_path.iterdir()) == []  # no partial file, no staging folder left behind


def test_imported_file_is_loaded_by_path_with_its_alignment_heads(
    tiny_en_checkpoint: Path, tmp_path: Path, no_network: list[str]
) -> None:
    """An official name with an imported file: no SHA check, no download, pairs → mask."""
    _place(tiny_en_checkpoint, tmp_path, "tiny.en")
    model = load_model("tiny.en", tmp_path, "cpu", allow_download=True)
    assert no_network == []
    pairs = torch.load(tiny_en_checkpoint, weights_only=True, mmap=True)["alignment_heads_pairs"]
    assert torch.equal(model.alignment_heads.to_dense(), _expected_mask(pairs))
    assert model.alignment_heads.is_sparse
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.dims.n_text_head == 6


def test_file_without_pairs_under_official_name_gets_openai_heads(
    tiny_en_checkpoint: Path, tmp_path: Path
) -> None:
    checkpoint = torch.load(tiny_en_checkpoint, weights_only=True)
    pairs = checkpoint.pop("alignment_heads_pairs")
    torch.save(checkpoint, tmp_path / "tiny.en.pt")
    shutil.copy(tmp_path / "tiny.en.pt", tmp_path / "custom.pt")
    official = load_model("tiny.en", tmp_path, "cpu", allow_download=False)
    assert torch.equal(official.alignment_heads.to_dense(), _expected_mask(pairs))
    custom = load_model("custom", tmp_path, "cpu", allow_download=False)
    default = torch.zeros(4, 6, dtype=torch.bool)
    default[2:] = True  # openai-whisper's default: the last half of the decoder layers
    assert torch.equal(custom.alignment_heads.to_dense(), default)


def test_corrupt_model_file_is_model_not_available(tmp_path: Path) -> None:
    (tmp_path / "base.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(ModelNotAvailable, match=r"base\.pt could not be loaded") as info:
        load_model("base", tmp_path, "cpu", allow_download=False)
    assert "python app.py models import <folder> --name base" in str(info.value)


def test_model_not_available_pickles() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(ModelNotAvailable("Model 'x' is not in /m.")))
    assert isinstance(error, ModelNotAvailable) and str(error) == "Model 'x' is not in /m."


# --------------------------------------------------------------------------- transcribe


def test_transcribe_reports_increasing_progress(
    tiny_en_model: whisper.Whisper, sentence_audio: np.ndarray
) -> None:
    seen: list[float] = []
    result = transcribe(tiny_en_model, sentence_audio, language="en", task="transcribe",
                        initial_prompt=None, fp16=True, progress=seen.append)
    assert normalize_words(result["text"]) == normalize_words(SENTENCE)
    assert result["language"] == "en" and result["segments"]
    assert len(seen) >= 2 and seen[-1] == 1.0
    assert all(0.0 <= v <= 1.0 for v in seen)
    assert seen == sorted(seen)
    assert TRANSCRIBE_MODULE.tqdm is tqdm  # the real module is back


def test_progress_moves_inside_one_window(tiny_en_model: whisper.Whisper,
                                          sentence_audio: np.ndarray) -> None:
    """A short file is one 30-s window: progress comes from the timestamps the decoder writes,
    not only when the window ends (the page showed 0 % until a short file vanished)."""
    pause = np.zeros(16000, np.float32)
    samples = np.concatenate([sentence_audio, pause, sentence_audio, pause, sentence_audio])
    assert len(samples) < 30 * 16000
    seen: list[float] = []
    init = whisper.decoding.DecodingTask.__init__
    torch.manual_seed(0)  # the worker fixes it per file; temperature fallback samples
    result = transcribe(tiny_en_model, samples, language="en", task="transcribe",
                        initial_prompt=None, fp16=False, progress=seen.append)
    assert len(result["segments"]) >= 2
    inside = [v for v in seen if 0.0 < v < 1.0]
    assert len(inside) >= 2, seen
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert whisper.decoding.DecodingTask.__init__ is init  # the decoder is restored


def test_progress_callback_can_abort_and_hook_is_restored(
    tiny_en_model: whisper.Whisper, sentence_audio: np.ndarray
) -> None:
    class Cancelled(Exception):
        pass

    def cancel(_: float) -> None:
        raise Cancelled

    with pytest.raises(Cancelled):
        transcribe(tiny_en_model, sentence_audio, language="en", task="transcribe",
                   initial_prompt=None, fp16=False, progress=cancel)
    assert TRANSCRIBE_MODULE.tqdm is tqdm


def test_word_timestamps_use_the_alignment_heads(
    tiny_en_checkpoint: Path, tmp_path: Path, sentence_audio: np.ndarray
) -> None:
    _place(tiny_en_checkpoint, tmp_path, "tiny.en")
    model = load_model("tiny.en", tmp_path, "cpu", allow_download=False)
    result = transcribe(model, sentence_audio, language=None, task="transcribe",
                        initial_prompt=None, fp16=False, progress=None, word_timestamps=True)
    words = [w for segment in result["segments"] for w in segment["words"]]
    assert normalize_words(" ".join(w["word"] for w in words)) == normalize_words(SENTENCE)
    starts = [w["start"] for w in words]
    assert starts == sorted(starts) and words[-1]["end"] <= len(sentence_audio) / 16000 + 0.5


def test_rejects_non_mono_audio(tiny_en_model: whisper.Whisper) -> None:
    with pytest.raises(ValueError, match="mono"):
        transcribe(tiny_en_model, np.zeros((2, 16000), np.float32), language="en",
                   task="transcribe", initial_prompt=None, fp16=False, progress=None)


# --------------------------------------------------------------------------- GPU preparation


def test_cast_for_gpu_keeps_layernorm_fp32(
    tiny_en_checkpoint: Path, sentence_audio: np.ndarray
) -> None:
    model = cast_for_gpu(whisper.load_model(str(tiny_en_checkpoint), device="cpu"))
    for module in model.modules():
        expected = torch.float32 if isinstance(module, torch.nn.LayerNorm) else torch.float16
        for param in module.parameters(recurse=False):
            assert param.dtype == expected, (type(module).__name__, param.shape)
    assert isinstance(whisper.model.LayerNorm(4), torch.nn.LayerNorm)
    assert model.encoder.conv1.weight.dtype == torch.float16
    assert model.decoder.blocks[0].attn.query.weight.dtype == torch.float16
    assert model.decoder.positional_embedding.dtype == torch.float16
    assert model.decoder.blocks[0].mlp_ln.weight.dtype == torch.float32
    # fp16 storage, fp32 compute on the CPU: the same words come out.
    result = transcribe(model, sentence_audio, language="en", task="transcribe",
                        initial_prompt=None, fp16=False, progress=None)
    assert normalize_words(result["text"]) == normalize_words(SENTENCE)


def test_pick_device_matches_torch() -> None:
    assert engine.pick_device() == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.gpu  # deselected by default (pyproject addopts); run with: pytest -m gpu
def test_cuda_load_is_fp16_and_transcribes(
    tiny_en_checkpoint: Path, tmp_path: Path, sentence_audio: np.ndarray
) -> None:
    _place(tiny_en_checkpoint, tmp_path, "tiny.en")
    model = load_model("tiny.en", tmp_path, "cuda", allow_download=False)
    assert model.device.type == "cuda"
    assert model.decoder.token_embedding.weight.dtype == torch.float16
    assert model.encoder.ln_post.weight.dtype == torch.float32
    assert model.alignment_heads.device.type == "cuda"
    seen: list[float] = []
    result = transcribe(model, sentence_audio, language="en", task="transcribe",
                        initial_prompt=None, fp16=True, progress=seen.append,
                        word_timestamps=True)
    assert normalize_words(result["text"]) == normalize_words(SENTENCE)
    assert seen[-1] == 1.0


def test_importing_service_modules_does_not_import_torch() -> None:
    """The parent imports engine/model_import for CLI commands and engines/fasterwhisper for
    planning; it must stay CUDA-free (neither torch nor CTranslate2)."""
    code = ("import sys, service.engine, service.engines, service.fasterwhisper, "
            "service.model_import, service.scheduler; "
            "print(*(m in sys.modules for m in ('torch', 'whisper', 'ctranslate2', "
            "'faster_whisper')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=60)
    assert out.stdout.split() == ["False"] * 4


def test_clips_are_kept_inside_the_audio_frames() -> None:
    from service.engine import clips_within

    n = 16000 * 2 + 37  # 2.0023 s: 200 whole mel frames
    assert clips_within([0.0, 2.0023], n) == [0.0, 2.0]
    assert clips_within([0.5, 1.0, 1.9, 5.0], n) == [0.5, 1.0, 1.9, 2.0]
    assert clips_within([2.5, 3.0], n) == [0.0, 2.0]  # nothing left: the whole file
    assert clips_within([1.0, 1.001], n) == [0.0, 2.0]


def test_a_clip_ending_at_the_last_sample_does_not_hang(tiny_en_model: whisper.Whisper,
                                                       tmp_path: Path) -> None:
    """VAD regions end at the last sample; whisper then looped forever on a zero-length
    window (found by a service test that never finished)."""
    from tests.speech import speak_wav, speech_16k

    x = speech_16k(speak_wav("Meeting number 2 starts at nine.", tmp_path / "m.wav"))
    result = engine.transcribe(tiny_en_model, x, language="en", task="transcribe",
                               initial_prompt=None, fp16=False, progress=None,
                               clip_timestamps=[0.0, len(x) / 16000])
    assert "meeting" in result["text"].lower()


def test_a_stalled_decoding_loop_is_stopped() -> None:
    from service.engine import STALL_WINDOWS, EngineStuck, _progress_module

    bar = _progress_module(lambda _f: None).tqdm(total=100)
    bar.update(10)
    for _ in range(STALL_WINDOWS - 1):
        bar.update(0)
    bar.update(5)  # moving again resets the count
    with pytest.raises(EngineStuck, match="stopped advancing"):
        for _ in range(STALL_WINDOWS):
            bar.update(0)
