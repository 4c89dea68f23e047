"""An openai-whisper checkpoint as a CTranslate2 (faster-whisper) model folder, offline.

Why: bench/gpu_probe.py measures both engines on the *same* random weights with the real
dimensions (nothing may be downloaded), so the faster-whisper side needs CTranslate2 folders
made from its checkpoints. CTranslate2's own converters start from a Hugging Face model (and
need ``transformers``); this fills ``ctranslate2.specs.WhisperSpec`` straight from the
openai-whisper state dict — the inverse of service/model_import.py's CTranslate2 reader — and
saves it with CTranslate2's own writer.

The folder holds what faster-whisper reads: ``model.bin`` + ``config.json`` (CTranslate2's),
``vocabulary.json``, ``tokenizer.json`` and ``preprocessor_config.json`` (the mel count: 128
for large-v3). The tokenizer is made from openai-whisper's own tokenizer: every special token
(start of transcript, languages, tasks, timestamps …) at its real id, ordinary tokens as
placeholders ``t<id>`` — enough to decode random weights; pass ``like`` (a real folder of the
same model: its tokenizer and config are copied) for a model that should produce words.

    python bench/ct2_models.py CHECKPOINT.pt OUT_FOLDER [--like REAL_CT2_FOLDER]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("bench.ct2_models")

MODEL_FILE = "model.bin"


def whisper_tokenizer(n_vocab: int) -> Any:
    """openai-whisper's tokenizer for a model with `n_vocab` entries (51864: English-only;
    51865: 99 languages; 51866: large-v3's 100)."""
    from whisper.tokenizer import get_tokenizer

    multilingual = n_vocab >= 51865
    tokenizer = get_tokenizer(multilingual, num_languages=n_vocab - 51765 - int(multilingual))
    if tokenizer.encoding.n_vocab != n_vocab:
        raise ValueError(f"no openai-whisper tokenizer has {n_vocab} tokens")
    return tokenizer


def special_tokens(n_vocab: int) -> dict[str, int]:
    """The special tokens (start of transcript, languages, tasks, timestamps …) and their ids."""
    return dict(whisper_tokenizer(n_vocab).encoding._special_tokens)


def vocabulary(n_vocab: int) -> list[str]:
    """The token strings by id: the special ones as whisper names them, others ``t<id>``."""
    names = {i: name for name, i in special_tokens(n_vocab).items()}
    return [names.get(i, f"t{i}") for i in range(n_vocab)]


def write_tokenizer(path: Path, tokens: list[str]) -> None:
    """A ``tokenizers`` word-level tokenizer over `tokens` (ids are the list's positions)."""
    from tokenizers import Tokenizer, models

    model = models.WordLevel(vocab={t: i for i, t in enumerate(tokens)},
                             unk_token="<|endoftext|>")
    Tokenizer(model).save(str(path))


def _fused(state: dict[str, np.ndarray], prefix: str, names: tuple[str, ...]) -> tuple[
        np.ndarray, np.ndarray]:
    """[q; k; v] (or [k; v]) rows, as CTranslate2 stores attention; openai-whisper's key has
    no bias, so its part of the fused bias is zero (exact: softmax ignores a constant)."""
    weights = [state[f"{prefix}.{n}.weight"] for n in names]
    biases = [state.get(f"{prefix}.{n}.bias", np.zeros(w.shape[0], w.dtype))
              for n, w in zip(names, weights, strict=True)]
    return np.concatenate(weights), np.concatenate(biases)


def build_spec(dims: dict[str, int], state: dict[str, np.ndarray],
               config: dict[str, Any] | None = None) -> Any:
    """A filled ``WhisperSpec`` (its config and vocabulary too) for an openai-whisper model;
    `config` overrides the defaults (suppressed ids, language ids, alignment heads)."""
    from ctranslate2.specs import whisper_spec

    spec = whisper_spec.WhisperSpec(dims["n_audio_layer"], dims["n_audio_head"],
                                    dims["n_text_layer"], dims["n_text_head"])

    def linear(dst: Any, src: str) -> None:
        dst.weight = state[f"{src}.weight"]
        if f"{src}.bias" in state:
            dst.bias = state[f"{src}.bias"]

    def norm(dst: Any, src: str) -> None:
        dst.gamma, dst.beta = state[f"{src}.weight"], state[f"{src}.bias"]

    def mlp(dst: Any, src: str) -> None:
        norm(dst.ffn.layer_norm, f"{src}.mlp_ln")
        linear(dst.ffn.linear_0, f"{src}.mlp.0")
        linear(dst.ffn.linear_1, f"{src}.mlp.2")

    def self_attention(dst: Any, src: str) -> None:
        norm(dst.layer_norm, f"{src}.attn_ln")
        dst.linear[0].weight, dst.linear[0].bias = _fused(state, f"{src}.attn",
                                                          ("query", "key", "value"))
        linear(dst.linear[1], f"{src}.attn.out")

    enc = spec.encoder
    linear(enc.conv1, "encoder.conv1")
    linear(enc.conv2, "encoder.conv2")
    enc.position_encodings.encodings = state["encoder.positional_embedding"]
    for i, layer in enumerate(enc.layer):
        self_attention(layer.self_attention, f"encoder.blocks.{i}")
        mlp(layer, f"encoder.blocks.{i}")
    norm(enc.layer_norm, "encoder.ln_post")

    dec = spec.decoder
    dec.embeddings.weight = state["decoder.token_embedding.weight"]
    dec.position_encodings.encodings = state["decoder.positional_embedding"]
    for i, layer in enumerate(dec.layer):
        src = f"decoder.blocks.{i}"
        self_attention(layer.self_attention, src)
        norm(layer.attention.layer_norm, f"{src}.cross_attn_ln")
        linear(layer.attention.linear[0], f"{src}.cross_attn.query")
        kv = layer.attention.linear[1]
        kv.weight, kv.bias = _fused(state, f"{src}.cross_attn", ("key", "value"))
        linear(layer.attention.linear[2], f"{src}.cross_attn.out")
        mlp(layer, src)
    norm(dec.layer_norm, "decoder.ln")
    dec.projection.weight = state["decoder.token_embedding.weight"]  # tied, as in openai-whisper

    specials = special_tokens(dims["n_vocab"])
    sot, translate = specials["<|startoftranscript|>"], specials["<|translate|>"]
    spec.config.suppress_ids = []
    spec.config.suppress_ids_begin = [220, specials["<|endoftext|>"]]  # " ", end: as official
    spec.config.lang_ids = list(range(sot + 1, translate))  # the language tokens
    layers, heads = dims["n_text_layer"], dims["n_text_head"]
    spec.config.alignment_heads = [list(p) for p in itertools.product(  # CTranslate2's default
        range(layers // 2, layers), range(heads))]
    for key, value in (config or {}).items():
        setattr(spec.config, key, value)
    spec.register_vocabulary(vocabulary(dims["n_vocab"]))
    return spec


CONFIG_KEYS = ("suppress_ids", "suppress_ids_begin", "lang_ids", "alignment_heads")


def write_folder(dims: dict[str, int], state: dict[str, np.ndarray], dest: Path, *,
                 like: Path | None = None, quantization: str = "float16") -> Path:
    """Save the model as a CTranslate2 folder at `dest` (replaced if there), weights stored as
    `quantization`; faster-whisper converts to its compute type when it loads. `like`: a
    real CTranslate2 folder of the same model whose tokenizer and config are taken."""
    config = None
    if like is not None:
        real = json.loads((like / "config.json").read_text(encoding="utf-8"))
        config = {k: real[k] for k in CONFIG_KEYS if k in real}
    spec = build_spec(dims, state, config)
    spec.validate()
    spec.optimize(quantization=quantization)
    staging = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    spec.save(str(staging))
    if like is not None:
        shutil.copyfile(like / "tokenizer.json", staging / "tokenizer.json")
    else:
        write_tokenizer(staging / "tokenizer.json", vocabulary(dims["n_vocab"]))
    (staging / "preprocessor_config.json").write_text(json.dumps({
        "feature_size": dims["n_mels"], "sampling_rate": 16000, "hop_length": 160,
        "chunk_length": 30, "n_fft": 400}), encoding="utf-8")
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return dest


def from_checkpoint(checkpoint: Path, dest: Path, *, like: Path | None = None) -> Path:
    """`checkpoint` (an openai-whisper ``.pt``: ``{"dims", "model_state_dict"}``) → `dest`."""
    import torch

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    state = {k: v.float().numpy().astype(np.float16) for k, v in
             ckpt["model_state_dict"].items()}
    folder = write_folder(dict(ckpt["dims"]), state, dest, like=like)
    log.info("wrote %s from %s", folder, checkpoint)
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--like", type=Path,
                    help="a real CTranslate2 folder of this model: its tokenizer and config")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from_checkpoint(args.checkpoint, args.out, like=args.like)
    return 0


if __name__ == "__main__":
    sys.exit(main())
