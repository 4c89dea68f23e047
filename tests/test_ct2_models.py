"""bench/ct2_models.py: an openai-whisper checkpoint written as a CTranslate2 folder.

The real tiny.en goes the whole way round — its CTranslate2 folder imported to a checkpoint
(service/model_import.py), written back by ct2_models — and must come back variable for
variable and transcribe real speech token for token as the original folder does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import ct2_models
from service import model_import
from tests.speech import espeak_available, speak_wav, speech_16k


def _variables(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with model_import._mapped(path) as buf:
        model = model_import._parse_ct2(buf, path)
        model_import._dequantize(model.variables)
        return ({k: np.array(v, dtype=np.float32) for k, v in model.variables.items()},
                dict(model.aliases))


@pytest.fixture(scope="module")
def round_trip(tiny_en_source: Path, tiny_en_checkpoint: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("ct2") / "tiny.en"
    return ct2_models.from_checkpoint(tiny_en_checkpoint, dest, like=tiny_en_source)


def test_the_round_trip_gives_back_every_variable(round_trip: Path, tiny_en_source: Path) -> None:
    original, original_aliases = _variables(tiny_en_source / "model.bin")
    ours, aliases = _variables(round_trip / "model.bin")
    assert set(original) <= set(ours)  # newer CTranslate2 adds scalars with default values
    for name, value in original.items():
        assert ours[name].shape == value.shape, name
        np.testing.assert_allclose(ours[name], value, atol=1e-3, err_msg=name)
    # the output projection stays tied to the token embedding, as in openai-whisper
    assert aliases == original_aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert sorted(p.name for p in round_trip.iterdir()) == [
        "config.json", "model.bin", "preprocessor_config.json", "tokenizer.json",
        "vocabulary.json"]


@pytest.mark.skipif(not espeak_available(), reason="needs espeak-ng")
def test_the_round_trip_transcribes_as_the_original(round_trip: Path, tiny_en_source: Path,
                                                    tmp_path: Path) -> None:
    from faster_whisper import WhisperModel

    wav = speak_wav("We meet on Tuesday to discuss the budget for next year.",
                    tmp_path / "s.wav")
    audio = speech_16k(wav)
    results = []
    for folder in (tiny_en_source, round_trip):
        model = WhisperModel(str(folder), device="cpu", compute_type="float32", cpu_threads=2)
        segments, _ = model.transcribe(audio, beam_size=1, temperature=0.0, vad_filter=False)
        results.append([(s.tokens, s.text) for s in segments])
    assert results[0] == results[1]
    assert "Tuesday" in "".join(text for _, text in results[1])


@pytest.mark.parametrize("n_vocab", [51864, 51865, 51866])
def test_the_made_tokenizer_has_whispers_special_ids(n_vocab: int, tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    tokens = ct2_models.vocabulary(n_vocab)
    assert len(tokens) == n_vocab and len(set(tokens)) == n_vocab
    ct2_models.write_tokenizer(tmp_path / "tokenizer.json", tokens)
    made = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    whisper = ct2_models.whisper_tokenizer(n_vocab)
    for name, expected in (("<|endoftext|>", whisper.eot), ("<|startoftranscript|>", whisper.sot),
                           ("<|notimestamps|>", whisper.no_timestamps),
                           ("<|0.00|>", whisper.timestamp_begin), ("<|en|>", None)):
        expected = whisper.encoding.encode_single_token(name) if expected is None else expected
        assert made.token_to_id(name) == expected, name
    assert (made.token_to_id("<|yue|>") is not None) == (n_vocab == 51866)  # large-v3's 100th
