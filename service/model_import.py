"""Convert CTranslate2 (faster-whisper) and Hugging Face Whisper models to openai-whisper `.pt`.

Why: the service runs openai-whisper, but the Whisper weights people already have on disk (and
the ones that ship inside packages we can use offline) are often faster-whisper/CTranslate2
folders or Hugging Face `transformers` folders. Converting once gives a normal checkpoint
(``{"dims": ..., "model_state_dict": ...}``, fp16 like the official files) that
``whisper.load_model(path)`` loads directly.

Supported inputs (see :func:`detect_format`):

* CTranslate2 folder: ``model.bin`` (binary versions 4-6, ``WhisperSpec``; float32, float16,
  bfloat16, and int8/int16 weights with their ``*_scale`` companions, which are dequantized)
  plus an optional ``config.json`` whose ``alignment_heads`` are kept. A model split into
  ``model.bin.part1``, ``model.bin.part2``, ... is joined first.
* Hugging Face folder: ``config.json`` with ``"model_type": "whisper"`` and
  ``model.safetensors`` (optionally sharded with ``model.safetensors.index.json``) or
  ``pytorch_model.bin``. Safetensors files are read by a small built-in reader (the format
  is a JSON header plus raw little-endian arrays), so the ``safetensors`` package is not
  needed; ``pytorch_model.bin`` is read with ``torch.load(weights_only=True)``.

torch is imported inside functions: the parent process imports this module for
``models list``/``models import`` commands and must stay light.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import fsops

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

__all__ = ["ModelImportError", "detect_format", "import_model", "list_models"]

CT2_FILE = "model.bin"
CONFIG_FILE = "config.json"
HF_SAFETENSORS = "model.safetensors"
HF_SAFETENSORS_INDEX = "model.safetensors.index.json"
HF_TORCH_BIN = "pytorch_model.bin"

EXPECTED_FILES = (
    "Expected either a faster-whisper/CTranslate2 model folder (model.bin, usually with "
    "config.json, tokenizer.json and vocabulary.txt), or a Hugging Face transformers Whisper "
    'folder (config.json containing "model_type": "whisper", plus model.safetensors or '
    "pytorch_model.bin)."
)

# CTranslate2 model.bin: binary versions 4..6 share the layout read below (version >= 4 stores
# a dtype id and a byte count per variable; version >= 3 has aliases).
_CT2_VERSIONS = range(4, 7)
_CT2_DTYPES: dict[int, np.dtype | None] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: None,  # bfloat16: numpy has no such dtype; read as uint16 and widen.
}
_CT2_DTYPE_NAMES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
_MAX_RANK = 8
# Whisper's attention heads are 64 wide in every official size; used only when the file
# carries no num_heads scalar (old converters).
_HEAD_DIM = 64


class ModelImportError(Exception):
    """A model folder cannot be converted; the message says why in plain words."""


# --------------------------------------------------------------------------- public API


def detect_format(src: Path) -> str:
    """Return "ctranslate2" or "transformers" for a model folder, or raise ModelImportError."""
    src = Path(src)
    if src.is_file():
        if src.suffix == ".pt":
            raise ModelImportError(
                f"{src} is already an openai-whisper checkpoint: copy it into the models "
                "folder as NAME.pt instead of importing it."
            )
        raise ModelImportError(f"{src} is a file; give the model folder. {EXPECTED_FILES}")
    if not src.is_dir():
        raise ModelImportError(f"Model folder {src} does not exist. {EXPECTED_FILES}")
    if (src / CT2_FILE).is_file() or _ct2_parts(src):
        return "ctranslate2"
    config = _read_json(src / CONFIG_FILE) if (src / CONFIG_FILE).is_file() else None
    if config is not None and config.get("model_type") == "whisper":
        if any((src / f).is_file() for f in (HF_SAFETENSORS, HF_SAFETENSORS_INDEX, HF_TORCH_BIN)):
            return "transformers"
        raise ModelImportError(
            f"{src} has a Hugging Face Whisper config.json but no weights: expected "
            f"{HF_SAFETENSORS} or {HF_TORCH_BIN} beside it."
        )
    found = ", ".join(sorted(p.name for p in src.iterdir())[:12]) or "nothing"
    raise ModelImportError(f"No Whisper model found in {src} (it contains: {found}). "
                           f"{EXPECTED_FILES}")


def import_model(src: Path, dest: Path) -> Path:
    """Convert the model folder ``src`` into the openai-whisper checkpoint ``dest`` (atomic)."""
    src, dest = Path(src), Path(dest)
    fmt = detect_format(src)
    log.info("importing %s model from %s", fmt, src)
    if fmt == "ctranslate2":
        checkpoint = _convert_ctranslate2(src)
    else:
        checkpoint = _convert_transformers(src)
    _save_atomic(checkpoint, dest)
    log.info("wrote %s (%s)", dest, _dims_summary(checkpoint["dims"]))
    return dest


def list_models(models_dir: Path) -> list[dict[str, Any]]:
    """Describe each ``*.pt`` in models_dir: name, path, size, dims (read lazily via mmap)."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    rows = []
    for path in sorted(models_dir.glob("*.pt")):
        row: dict[str, Any] = {
            "name": path.stem,
            "path": str(path),
            "size_mb": round(path.stat().st_size / 2**20, 1),
            "dims": None,
            "imported_from": None,
            "alignment_heads": False,
        }
        try:
            checkpoint = _load_checkpoint_lazily(path)
            row["dims"] = dict(checkpoint["dims"])
            row["imported_from"] = checkpoint.get("import_info", {}).get("format")
            row["alignment_heads"] = bool(checkpoint.get("alignment_heads_pairs"))
        except Exception as exc:  # a listing must survive one bad file
            row["error"] = f"cannot read checkpoint: {exc}"
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- CTranslate2


@dataclass
class _Ct2Model:
    spec: str
    revision: int
    variables: dict[str, np.ndarray]  # views into the mmap (or dequantized copies)
    aliases: dict[str, str]


class _Cursor:
    """Bounds-checked little-endian reader: truncation is a ModelImportError, not struct.error."""

    def __init__(self, buf: mmap.mmap, path: Path) -> None:
        self.buf, self.path, self.pos, self.size = buf, path, 0, len(buf)

    def _need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise ModelImportError(
                f"{self.path} is truncated or corrupt: reading {what} at byte {self.pos} needs "
                f"{n} bytes but the file has {self.size}. Copy or download the model again."
            )

    def uint(self, fmt: str, what: str) -> int:
        n = struct.calcsize(fmt)
        self._need(n, what)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return int(value)

    def string(self, what: str) -> str:
        n = self.uint("<H", what)
        self._need(n, what)
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        if n == 0 or raw[-1:] != b"\0":
            raise ModelImportError(f"{self.path} is corrupt: {what} is not a NUL-ended string.")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise ModelImportError(f"{self.path} is corrupt: {what} is not UTF-8.") from None

    def array(self, dtype: np.dtype, count: int, nbytes: int, what: str) -> np.ndarray:
        self._need(nbytes, what)
        arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += nbytes
        return arr


def _ct2_parts(src: Path) -> list[Path]:
    """model.bin.part1, .part2, ... in numeric order (some packages split big files)."""
    parts = [p for p in src.glob(CT2_FILE + ".part*") if p.suffix[5:].isdigit()]
    return sorted(parts, key=lambda p: int(p.suffix[5:]))


@contextlib.contextmanager
def _ct2_weights_file(src: Path) -> Iterator[Path]:
    """Yield model.bin, joining split parts into a temporary file when needed."""
    if (src / CT2_FILE).is_file():
        yield src / CT2_FILE
        return
    parts = _ct2_parts(src)
    log.info("joining %d parts of %s", len(parts), CT2_FILE)
    with tempfile.TemporaryDirectory(prefix="dropscribe-import-") as tmp:
        joined = Path(tmp) / CT2_FILE
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out, 16 * 2**20)
        yield joined


@contextlib.contextmanager
def _mapped(path: Path) -> Iterator[mmap.mmap]:
    """Memory-map a file read-only, so weights are viewed in place rather than read twice."""
    with path.open("rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            raise ModelImportError(f"{path} is empty. Copy or download the model again.")
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        yield mm
    finally:
        try:
            mm.close()
        except BufferError:  # numpy views still alive (e.g. in a traceback); GC releases them
            pass


def _parse_ct2(buf: mmap.mmap, path: Path) -> _Ct2Model:
    """Parse CTranslate2 model.bin (layout in DESIGN.md §8) into zero-copy numpy views."""
    cur = _Cursor(buf, path)
    version = cur.uint("<I", "the format version")
    if version not in _CT2_VERSIONS:
        raise ModelImportError(
            f"{path} has CTranslate2 format version {version}; this importer reads versions "
            f"{_CT2_VERSIONS.start}-{_CT2_VERSIONS.stop - 1}. Re-convert the model with a recent "
            "ct2-transformers-converter, or the file is not a CTranslate2 model."
        )
    spec = cur.string("the model type")
    revision = cur.uint("<I", "the spec revision")
    if spec != "WhisperSpec":
        raise ModelImportError(
            f"{path} is a CTranslate2 '{spec}' model, not a Whisper model (WhisperSpec)."
        )
    count = cur.uint("<I", "the variable count")
    variables: dict[str, np.ndarray] = {}
    for index in range(count):
        name, arr = _read_ct2_variable(cur, f"variable {index + 1} of {count}")
        variables[name] = arr
    aliases = {}
    for index in range(cur.uint("<I", "the alias count")):
        alias = cur.string(f"alias {index + 1}")
        aliases[alias] = cur.string(f"the target of alias '{alias}'")
    if cur.pos != cur.size:
        log.warning("%s: %d unexpected bytes after the aliases", path, cur.size - cur.pos)
    log.debug("%s: %s revision %d, %d variables, %d aliases",
              path, spec, revision, len(variables), len(aliases))
    return _Ct2Model(spec, revision, variables, aliases)


def _read_ct2_variable(cur: _Cursor, what: str) -> tuple[str, np.ndarray]:
    name = cur.string(f"the name of {what}")
    rank = cur.uint("<B", f"the rank of '{name}'")
    if rank > _MAX_RANK:
        raise ModelImportError(f"{cur.path} is corrupt: '{name}' claims {rank} dimensions.")
    shape = tuple(cur.uint("<I", f"the shape of '{name}'") for _ in range(rank))
    type_id = cur.uint("<B", f"the data type of '{name}'")
    nbytes = cur.uint("<I", f"the size of '{name}'")
    if type_id not in _CT2_DTYPES:
        raise ModelImportError(f"{cur.path} is corrupt: '{name}' has unknown data type {type_id}.")
    dtype = _CT2_DTYPES[type_id] or np.dtype("<u2")
    count = int(np.prod(shape, dtype=np.int64))
    if count * dtype.itemsize != nbytes:
        raise ModelImportError(
            f"{cur.path} is corrupt: '{name}' has shape {list(shape)} of "
            f"{_CT2_DTYPE_NAMES[type_id]} ({count * dtype.itemsize} bytes) but stores {nbytes}."
        )
    arr = cur.array(dtype, count, nbytes, f"the data of '{name}'").reshape(shape)
    if type_id == 5:
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return name, arr


def _dequantize(variables: dict[str, np.ndarray]) -> None:
    """Replace int8/int16 weights by float32 using CTranslate2's scales (q = rint(w * scale))."""
    for scale_name in [n for n in variables if n.endswith("_scale")]:
        base = scale_name[: -len("_scale")]
        if base not in variables:
            continue
        q, scale = variables[base], variables[scale_name].astype(np.float32)
        if q.dtype.kind != "i":
            continue
        if scale.size == 1:  # int16: one scale for the whole tensor
            w = q.astype(np.float32) / scale.reshape(())
        elif scale.ndim == 1 and scale.shape[0] == q.shape[0]:  # int8: one scale per row
            w = (q.reshape(q.shape[0], -1).astype(np.float32) / scale[:, None]).reshape(q.shape)
        else:
            raise ModelImportError(
                f"'{base}' is quantized with a scale of shape {list(scale.shape)}, which this "
                "importer does not understand. Convert the model without quantization "
                "(ct2-transformers-converter --quantization float16) and import that."
            )
        variables[base] = w
        del variables[scale_name]


class _Ct2Reader:
    """Name-based access to CTranslate2 variables, following aliases, with clear errors."""

    def __init__(self, model: _Ct2Model, path: Path) -> None:
        self.model, self.path = model, path

    def has(self, name: str) -> bool:
        return self.model.aliases.get(name, name) in self.model.variables

    def get(self, name: str) -> np.ndarray:
        target = self.model.aliases.get(name, name)
        try:
            arr = self.model.variables[target]
        except KeyError:
            raise ModelImportError(
                f"{self.path} has no variable '{name}': it is not a Whisper model in the layout "
                "this importer knows (faster-whisper/CTranslate2 WhisperSpec)."
            ) from None
        if arr.dtype.kind not in "f" and arr.ndim > 0:
            raise ModelImportError(
                f"'{name}' in {self.path} is stored as {arr.dtype} without a scale, so it cannot "
                "be turned back into float weights."
            )
        return arr

    def scalar(self, name: str) -> int | None:
        if not self.has(name):
            return None
        arr = self.model.variables[self.model.aliases.get(name, name)]
        return int(arr.reshape(-1)[0]) if arr.size == 1 else None

    def layer_count(self, stack: str) -> int:
        pattern = re.compile(rf"^{stack}/layer_(\d+)/")
        found = {int(m.group(1)) for n in self.model.variables if (m := pattern.match(n))}
        if found != set(range(len(found))):
            raise ModelImportError(f"{self.path}: the {stack} layers are not numbered 0..N-1.")
        return len(found)


def _ct2_dims(r: _Ct2Reader) -> dict[str, int]:
    """ModelDimensions from tensor shapes plus the num_heads scalars CTranslate2 stores."""
    conv1 = r.get("encoder/conv1/weight")  # (n_audio_state, n_mels, 3)
    emb = r.get("decoder/embeddings/weight")  # (n_vocab, n_text_state)
    dims = {
        "n_mels": int(conv1.shape[1]),
        "n_audio_ctx": int(r.get("encoder/position_encodings/encodings").shape[0]),
        "n_audio_state": int(conv1.shape[0]),
        "n_audio_head": 0,
        "n_audio_layer": r.layer_count("encoder"),
        "n_vocab": int(emb.shape[0]),
        "n_text_ctx": int(r.get("decoder/position_encodings/encodings").shape[0]),
        "n_text_state": int(emb.shape[1]),
        "n_text_head": 0,
        "n_text_layer": r.layer_count("decoder"),
    }
    for stack, key, state in (("encoder", "n_audio_head", "n_audio_state"),
                              ("decoder", "n_text_head", "n_text_state")):
        heads = r.scalar(f"{stack}/num_heads")
        if heads is None:
            heads = dims[state] // _HEAD_DIM
            log.warning("%s: no %s/num_heads scalar; assuming %d heads of width %d",
                        r.path, stack, heads, _HEAD_DIM)
        if heads <= 0 or dims[state] % heads:
            raise ModelImportError(f"{r.path}: {stack} has {heads} heads for width {dims[state]}.")
        dims[key] = heads
    return dims


def _check_ct2_flags(r: _Ct2Reader) -> None:
    """Refuse decoder options openai-whisper's architecture cannot express."""
    for name, expected in (("decoder/pre_norm", 1), ("decoder/scale_embeddings", 0),
                           ("decoder/alibi", 0)):
        value = r.scalar(name)
        if value is not None and value != expected:
            raise ModelImportError(
                f"{r.path}: '{name}' is {value}, but openai-whisper models need {expected}; "
                "this is not a standard Whisper model."
            )


def _ct2_state_dict(r: _Ct2Reader, dims: dict[str, int]) -> dict[str, torch.Tensor]:
    """Map CTranslate2 variable names to openai-whisper state_dict keys (fp16 tensors)."""
    state: dict[str, torch.Tensor] = {}

    def put(key: str, arr: np.ndarray) -> None:
        state[key] = _fp16(arr)

    def linear(dst: str, src: str) -> None:
        put(f"{dst}.weight", r.get(f"{src}/weight"))
        put(f"{dst}.bias", r.get(f"{src}/bias"))

    def norm(dst: str, src: str) -> None:
        put(f"{dst}.weight", r.get(f"{src}/gamma"))
        put(f"{dst}.bias", r.get(f"{src}/beta"))

    def fused(dst: str, src: str, names: tuple[str, ...]) -> None:
        # Rows are [q; k; v] (or [k; v]); openai-whisper's key has no bias. Dropping it is
        # exact: q.(k + b) adds the same q.b to every key's score, which softmax ignores.
        weights = np.split(r.get(f"{src}/weight"), len(names), axis=0)
        biases = np.split(r.get(f"{src}/bias"), len(names), axis=0)
        for name, w, b in zip(names, weights, biases, strict=True):
            put(f"{dst}.{name}.weight", w)
            if name != "key":
                put(f"{dst}.{name}.bias", b)

    for conv in ("conv1", "conv2"):
        linear(f"encoder.{conv}", f"encoder/{conv}")
    put("encoder.positional_embedding", r.get("encoder/position_encodings/encodings"))
    for i in range(dims["n_audio_layer"]):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        fused(f"{dst}.attn", f"{src}/self_attention/linear_0", ("query", "key", "value"))
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        _ct2_mlp(norm, linear, dst, src)
    norm("encoder.ln_post", "encoder/layer_norm")

    put("decoder.token_embedding.weight", r.get("decoder/embeddings/weight"))
    put("decoder.positional_embedding", r.get("decoder/position_encodings/encodings"))
    for i in range(dims["n_text_layer"]):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        fused(f"{dst}.attn", f"{src}/self_attention/linear_0", ("query", "key", "value"))
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
        fused(f"{dst}.cross_attn", f"{src}/attention/linear_1", ("key", "value"))
        linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
        _ct2_mlp(norm, linear, dst, src)
    norm("decoder.ln", "decoder/layer_norm")
    _check_tied_projection(r)
    return state


def _ct2_mlp(norm: Callable[[str, str], None], linear: Callable[[str, str], None],
             dst: str, src: str) -> None:
    norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
    linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
    linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")


def _check_tied_projection(r: _Ct2Reader) -> None:
    """openai-whisper reuses the token embedding as output projection; refuse anything else."""
    name = "decoder/projection/weight"
    if r.model.aliases.get(name) == "decoder/embeddings/weight" or not r.has(name):
        return
    if not np.array_equal(r.get(name), r.get("decoder/embeddings/weight")):
        raise ModelImportError(
            f"{r.path}: the output projection differs from the token embedding; openai-whisper "
            "models tie them, so this model cannot be converted."
        )


def _convert_ctranslate2(src: Path) -> dict[str, Any]:
    config = _read_json(src / CONFIG_FILE) if (src / CONFIG_FILE).is_file() else {}
    with _ct2_weights_file(src) as path, _mapped(path) as buf:
        model = _parse_ct2(buf, path)
        _dequantize(model.variables)
        reader = _Ct2Reader(model, path)
        _check_ct2_flags(reader)
        dims = _ct2_dims(reader)
        state = _ct2_state_dict(reader, dims)  # copies: safe after the mmap closes
        info = {"spec": model.spec, "revision": model.revision}
        del model, reader
    pairs = _alignment_pairs(config.get("alignment_heads"), dims, src / CONFIG_FILE)
    extra = {k: v for k, v in config.items() if k != "alignment_heads"}
    return _checkpoint(state, dims, pairs, {"format": "ctranslate2", **info}, extra)


# --------------------------------------------------------------------------- transformers

_HF_TOP_LEVEL = {
    "encoder.conv1.weight": "encoder.conv1.weight",
    "encoder.conv1.bias": "encoder.conv1.bias",
    "encoder.conv2.weight": "encoder.conv2.weight",
    "encoder.conv2.bias": "encoder.conv2.bias",
    "encoder.embed_positions.weight": "encoder.positional_embedding",
    "encoder.layer_norm.weight": "encoder.ln_post.weight",
    "encoder.layer_norm.bias": "encoder.ln_post.bias",
    "decoder.embed_tokens.weight": "decoder.token_embedding.weight",
    "decoder.embed_positions.weight": "decoder.positional_embedding",
    "decoder.layer_norm.weight": "decoder.ln.weight",
    "decoder.layer_norm.bias": "decoder.ln.bias",
}
_HF_LAYER_PARTS = {
    "self_attn.q_proj": "attn.query",
    "self_attn.k_proj": "attn.key",
    "self_attn.v_proj": "attn.value",
    "self_attn.out_proj": "attn.out",
    "self_attn_layer_norm": "attn_ln",
    "encoder_attn.q_proj": "cross_attn.query",
    "encoder_attn.k_proj": "cross_attn.key",
    "encoder_attn.v_proj": "cross_attn.value",
    "encoder_attn.out_proj": "cross_attn.out",
    "encoder_attn_layer_norm": "cross_attn_ln",
    "fc1": "mlp.0",
    "fc2": "mlp.2",
    "final_layer_norm": "mlp_ln",
}
_HF_LAYER_KEY = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_HF_TIED = "proj_out.weight"

_SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8",
                       "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


def _hf_key_to_openai(key: str) -> str | None:
    """openai-whisper key for a transformers key; None for the tied output projection."""
    key = key.removeprefix("model.")
    if key == _HF_TIED:
        return None
    if key in _HF_TOP_LEVEL:
        return _HF_TOP_LEVEL[key]
    m = _HF_LAYER_KEY.match(key)
    if m and m.group(3) in _HF_LAYER_PARTS:
        stack, index, part, kind = m.groups()
        return f"{stack}.blocks.{index}.{_HF_LAYER_PARTS[part]}.{kind}"
    raise ModelImportError(f"Unexpected tensor '{key}' in the Hugging Face Whisper weights.")


def _convert_transformers(src: Path) -> dict[str, Any]:
    config = _read_json(src / CONFIG_FILE)
    state: dict[str, torch.Tensor] = {}
    tied = None
    for key, arr in _hf_tensors(src):
        name = _hf_key_to_openai(key)
        if name is None:
            tied = _fp16(arr)
        else:
            state[name] = _fp16(arr)
    embedding = state.get("decoder.token_embedding.weight")
    if tied is not None and embedding is not None:
        if tied.shape != embedding.shape or not bool((tied == embedding).all()):
            raise ModelImportError(
                f"{src}: proj_out differs from the token embedding; openai-whisper ties them."
            )
    dims = _hf_dims(config, state, src)
    generation = src / "generation_config.json"
    heads = _read_json(generation).get("alignment_heads") if generation.is_file() else None
    pairs = _alignment_pairs(heads, dims, generation)
    return _checkpoint(state, dims, pairs, {"format": "transformers"}, {})


def _hf_dims(config: dict[str, Any], state: dict[str, torch.Tensor], src: Path) -> dict[str, int]:
    try:
        emb = state["decoder.token_embedding.weight"]
        conv1 = state["encoder.conv1.weight"]
        return {
            "n_mels": int(conv1.shape[1]),
            "n_audio_ctx": int(state["encoder.positional_embedding"].shape[0]),
            "n_audio_state": int(conv1.shape[0]),
            "n_audio_head": int(config["encoder_attention_heads"]),
            "n_audio_layer": int(config["encoder_layers"]),
            "n_vocab": int(emb.shape[0]),
            "n_text_ctx": int(state["decoder.positional_embedding"].shape[0]),
            "n_text_state": int(emb.shape[1]),
            "n_text_head": int(config["decoder_attention_heads"]),
            "n_text_layer": int(config["decoder_layers"]),
        }
    except KeyError as exc:
        raise ModelImportError(f"{src}: the Whisper weights or config.json lack {exc}.") from None


def _hf_tensors(src: Path) -> Iterator[tuple[str, np.ndarray]]:
    if (src / HF_SAFETENSORS).is_file():
        yield from _read_safetensors(src / HF_SAFETENSORS)
    elif (src / HF_SAFETENSORS_INDEX).is_file():
        shards = sorted(set(_read_json(src / HF_SAFETENSORS_INDEX).get("weight_map", {}).values()))
        for shard in shards:
            yield from _read_safetensors(src / shard)
    else:
        yield from _read_torch_bin(src / HF_TORCH_BIN)


def _read_safetensors(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """Minimal safetensors reader: u64 header size, JSON header, then raw tensors."""
    if not path.is_file():
        raise ModelImportError(f"{path} is missing (listed in the safetensors index).")
    with _mapped(path) as buf:
        if len(buf) < 8:
            raise ModelImportError(f"{path} is truncated.")
        (size,) = struct.unpack_from("<Q", buf, 0)
        if 8 + size > len(buf):
            raise ModelImportError(f"{path} is truncated or corrupt (header runs past the end).")
        try:
            header = json.loads(bytes(buf[8 : 8 + size]))
        except ValueError:
            raise ModelImportError(f"{path} is corrupt: its header is not JSON.") from None
        base = 8 + size
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            yield name, _safetensors_array(buf, base, name, meta, path)


def _safetensors_array(buf: mmap.mmap, base: int, name: str, meta: dict[str, Any],
                       path: Path) -> np.ndarray:
    dtype = _SAFETENSORS_DTYPES.get(meta.get("dtype", ""))
    if dtype is None:
        raise ModelImportError(
            f"{path}: tensor '{name}' has unsupported dtype {meta.get('dtype')}."
        )
    begin, end = meta["data_offsets"]
    shape = tuple(meta["shape"])
    count = int(np.prod(shape, dtype=np.int64))
    if end - begin != count * np.dtype(dtype).itemsize or base + end > len(buf):
        raise ModelImportError(f"{path} is truncated or corrupt at tensor '{name}'.")
    arr = np.frombuffer(buf, dtype=dtype, count=count, offset=base + begin).reshape(shape)
    if meta["dtype"] == "BF16":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr


def _read_torch_bin(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    import torch

    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelImportError(f"{path} cannot be read as PyTorch weights: {exc}") from exc
    if not isinstance(state, dict):
        raise ModelImportError(f"{path} does not hold a dictionary of tensors.")
    for name, tensor in state.items():
        yield name, tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()


# --------------------------------------------------------------------------- shared helpers


def _fp16(arr: np.ndarray) -> torch.Tensor:
    """A float16 tensor that owns its memory (a copy, so it outlives the mmap)."""
    import torch

    return torch.from_numpy(np.array(arr, dtype=np.float16, order="C"))


def _alignment_pairs(raw: Any, dims: dict[str, int], origin: Path) -> list[list[int]] | None:
    """Validate (layer, head) pairs for the decoder's cross-attention used by word timing."""
    if not raw:
        return None
    try:
        pairs = [[int(layer), int(head)] for layer, head in raw]
    except (TypeError, ValueError):
        log.warning("%s: ignoring malformed alignment_heads %r", origin, raw)
        return None
    bad = [p for p in pairs
           if not (0 <= p[0] < dims["n_text_layer"] and 0 <= p[1] < dims["n_text_head"])]
    if bad:
        log.warning("%s: ignoring alignment_heads outside %d layers x %d heads: %s",
                    origin, dims["n_text_layer"], dims["n_text_head"], bad)
        return None
    return pairs


def _checkpoint(state: dict[str, torch.Tensor], dims: dict[str, int],
                pairs: list[list[int]] | None, info: dict[str, Any],
                extra_config: dict[str, Any]) -> dict[str, Any]:
    _validate_state(state, dims)
    checkpoint: dict[str, Any] = {"dims": dims, "model_state_dict": state, "import_info": info}
    if pairs:
        checkpoint["alignment_heads_pairs"] = pairs
    if extra_config:
        # e.g. suppress_ids, lang_ids: JSON types only, so weights_only loading accepts them.
        checkpoint["source_config"] = json.loads(json.dumps(extra_config))
    return checkpoint


def _validate_state(state: dict[str, torch.Tensor], dims: dict[str, int]) -> None:
    """Compare keys and shapes with openai-whisper's own modules, built on the meta device."""
    import torch
    from whisper.model import AudioEncoder, TextDecoder

    with torch.device("meta"):
        parts = {
            "encoder": AudioEncoder(dims["n_mels"], dims["n_audio_ctx"], dims["n_audio_state"],
                                    dims["n_audio_head"], dims["n_audio_layer"]),
            "decoder": TextDecoder(dims["n_vocab"], dims["n_text_ctx"], dims["n_text_state"],
                                   dims["n_text_head"], dims["n_text_layer"]),
        }
    expected = {f"{prefix}.{k}": tuple(v.shape)
                for prefix, module in parts.items() for k, v in module.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} != {expected[k]}"
             for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        detail = "; ".join(filter(None, [
            f"missing {missing[:5]}" if missing else "",
            f"unexpected {unexpected[:5]}" if unexpected else "",
            f"wrong shapes {wrong[:5]}" if wrong else "",
        ]))
        raise ModelImportError(f"The converted weights do not fit openai-whisper: {detail}.")


def _save_atomic(checkpoint: dict[str, Any], dest: Path) -> None:
    """torch.save through fsops.atomic_write (never a half file under dest)."""
    import torch

    dest.parent.mkdir(parents=True, exist_ok=True)
    fsops.atomic_write(dest, lambda fh: torch.save(checkpoint, fh))


def _load_checkpoint_lazily(path: Path) -> dict[str, Any]:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy non-zip checkpoints cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelImportError(f"{path} cannot be read as JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelImportError(f"{path} should hold a JSON object.")
    return data


def _dims_summary(dims: dict[str, int]) -> str:
    return (f"{dims['n_audio_layer']}+{dims['n_text_layer']} layers, "
            f"width {dims['n_text_state']}, {dims['n_text_head']} heads, "
            f"vocab {dims['n_vocab']}, {dims['n_mels']} mels")
