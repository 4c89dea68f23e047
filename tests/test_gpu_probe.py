"""bench/gpu_probe.py: real dimensions, and the whole probe run end to end on the CPU.

The GPU branches need a card (see docs/gpu-measurements.md); everything else runs here for
real: random-weight checkpoints, spawned children, the engine's load and transcribe, the report.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import whisper

from bench import gpu_probe
from service import catalog, engine
from service.config import GpuSettings
from service.vram import default_estimate

REPO = Path(__file__).resolve().parents[1]
PROBE = REPO / "bench" / "gpu_probe.py"
RESULT = re.compile(
    r"^RESULT device=cpu models=1 fp16_vs_stock_load_peak=\d+\.\d+ back_to_baseline=n/a "
    r"faster_models=1 faster_int8_vs_openai_fp16_peak=\d+\.\d+$")


def _number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("×"))


def _row(text: str, section: str, *first: str) -> list[str]:
    """The cells of the table row that starts with the cells `first` in `## section`."""
    body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if tuple(cells[:len(first)]) == first:
            return cells
    raise AssertionError(f"no row {first!r} in section {section!r}:\n{body}")


def _table_after(text: str, marker: str) -> list[dict[str, str]]:
    """The first Markdown table after `marker`, as one dict per row keyed by the header."""
    lines = text.split(marker, 1)[1].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| "))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([c.strip() for c in line.strip().strip("|").split("|")])
    header, _, *rows = table
    return [dict(zip(header, row, strict=True)) for row in rows]


def _header(text: str, section: str) -> list[str]:
    body = text.split(f"## {section}", 1)[1]
    line = next(ln for ln in body.splitlines() if ln.startswith("| "))
    return [c.strip() for c in line.strip().strip("|").split("|")]


# --------------------------------------------------------------------------- dimensions


@pytest.mark.parametrize("name", gpu_probe.ALL_MODELS)
def test_dims_match_published_parameter_counts(name: str) -> None:
    published = catalog.OFFICIAL[name][0]  # openai-whisper's README, in millions
    counted = gpu_probe.weight_info(name).params_m
    # tiny's "39 M" is rounded generously: the real checkpoints hold 37.76 M values (the
    # tiny.en test below matches one tensor for tensor), 3.2 % below; all others are within 2 %.
    tolerance = 0.035 if name == "tiny" else 0.02
    assert abs(counted - published) / published <= tolerance, (name, counted, published)


def test_tiny_en_dims_and_shapes_are_those_of_a_real_checkpoint(tiny_en_checkpoint: Path) -> None:
    real = torch.load(tiny_en_checkpoint, map_location="cpu", weights_only=True, mmap=True)
    dims = gpu_probe.MODEL_DIMS["tiny.en"]
    assert real["dims"] == asdict(dims)
    shapes = {k: tuple(v.shape) for k, v in real["model_state_dict"].items()}
    assert shapes == gpu_probe.state_dict_shapes(dims)
    assert sum(v.numel() for v in real["model_state_dict"].values()) == \
        gpu_probe.weight_info("tiny.en").params


def test_default_estimates_are_the_services() -> None:
    assert gpu_probe.CONFIDENCE_FACTOR == GpuSettings().confidence_factor
    for name in gpu_probe.MODEL_DIMS:
        assert gpu_probe.default_estimate(name) == default_estimate(
            name, GpuSettings().confidence_factor)


def test_weights_only_needs_no_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "weights.md"
    assert gpu_probe.main(["--weights-only", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[-1].startswith("RESULT device=none models=6 ")
    text = out.read_text(encoding="utf-8")
    for name in gpu_probe.ALL_MODELS:
        assert f"| {name} | " in text
    # turbo: 809 M values, fp16 except LayerNorm and buffers ≈ 1.5 GiB; fp32 twice that.
    w = gpu_probe.weight_info("turbo")
    assert 1500 < w.fp16_bytes / 2**20 < 1600 and abs(w.fp32_bytes / w.fp16_bytes - 2) < 0.01


# --------------------------------------------------------------------------- the probe on the CPU


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    """One real probe run: tiny, stock and engine paths, faster-whisper int8 and float32,
    1 and 2 tasks at once and batched 2, both engines (~50 s)."""
    folder = tmp_path_factory.mktemp("gpu_probe")
    out, models = folder / "report.md", folder / "models"
    proc = subprocess.run(
        [sys.executable, str(PROBE), "--device", "cpu", "--models", "tiny",
         "--concurrency", "1,2", "--audio-seconds", "5", "--max-tokens", "16",
         "--out", str(out), "--cache-dir", str(models)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out.read_text(encoding="utf-8"), proc.stdout, models


def test_cpu_run_reports_the_model_row(cpu_run: tuple[str, str, Path]) -> None:
    text, _, _ = cpu_run
    assert "This run used the CPU: no VRAM figure below is measured." in text
    header = _header(text, "Per model (cpu)")
    row = dict(zip(header, _row(text, "Per model (cpu)", "tiny"), strict=True))
    w = gpu_probe.weight_info("tiny")
    assert _number(row["params M"]) == pytest.approx(w.params_m, abs=0.05)
    assert _number(row["fp16 weights MiB"]) == pytest.approx(w.fp16_bytes / 2**20, abs=1)
    figures = {k: _number(row[k]) for k in (
        "stock load peak MiB", "stock steady MiB", "fp16 load peak MiB", "fp16 steady MiB",
        "transcribe peak MiB")}
    fp32_mb = w.fp32_bytes / 2**20
    # On the CPU both paths hold the fp32 model: at least its weights stay resident.
    assert figures["fp16 steady MiB"] >= 0.9 * fp32_mb, figures
    assert figures["stock steady MiB"] >= 0.9 * fp32_mb, figures
    assert figures["fp16 load peak MiB"] >= figures["fp16 steady MiB"], figures
    assert figures["transcribe peak MiB"] > 0, figures
    assert row["context MiB (init / end)"] == "n/a" and row["back to baseline"] == "n/a"
    details = _table_after(text, "### Details")
    assert [(d["model"], d["path"]) for d in details] == [("tiny", "stock"), ("tiny", "fp16")]
    for d in details:
        # one 30-s window, bounded by --max-tokens (timestamp tokens are suppressed, so
        # whisper's seek cannot wander over random timestamps), same output on both paths
        assert 0 < int(d["tokens decoded"]) <= 16, d
        assert d["dtype"] == "float32", d  # the engine casts to fp16 only for CUDA
    assert details[0]["output hash"] == details[1]["output hash"]


def test_cpu_run_reports_throughput_for_each_concurrency(cpu_run: tuple[str, str, Path]) -> None:
    text, _, _ = cpu_run
    section = "Throughput: tiny, k tasks at once on one CPU"
    header = _header(text, section)
    for k in (1, 2):
        row = dict(zip(header, _row(text, section, str(k)), strict=True))
        assert _number(row["audio s per wall s"]) > 0, row
        assert _number(row["per-task load s (mean)"]) > 0, row
        # the scheduler's CPU rule: cores // tasks at once
        assert int(row["torch threads"]) == max(1, (os.cpu_count() or 1) // k), row
    assert _number(dict(zip(header, _row(text, section, "1"), strict=True))["speedup vs 1"]) == 1


def test_cpu_run_ends_with_the_result_line(cpu_run: tuple[str, str, Path]) -> None:
    text, stdout, _ = cpu_run
    lines = stdout.strip().splitlines()
    assert RESULT.match(lines[-1]), lines[-1]
    assert sum(1 for line in lines if line.startswith("RESULT ")) == 1
    assert lines[-1] in text
    assert "## What this means for the default estimates" in text


def test_probe_checkpoint_loads_through_the_engine(cpu_run: tuple[str, str, Path]) -> None:
    _, _, models = cpu_run
    saved = torch.load(models / "tiny.pt", map_location="cpu", weights_only=True, mmap=True)
    assert set(saved) == {"dims", "model_state_dict"}  # the layout of the official files
    assert {v.dtype for v in saved["model_state_dict"].values()} == {torch.float16}

    model = engine.load_model("tiny", models, "cpu", allow_download=False)
    assert asdict(model.dims) == asdict(gpu_probe.MODEL_DIMS["tiny"])
    # An official name gets openai's alignment heads for tiny, not whisper's default mask.
    official = whisper.model.Whisper(model.dims)
    default_mask = official.alignment_heads.to_dense().clone()
    official.set_alignment_heads(whisper._ALIGNMENT_HEADS["tiny"])
    assert torch.equal(model.alignment_heads.to_dense(), official.alignment_heads.to_dense())
    assert not torch.equal(model.alignment_heads.to_dense(), default_mask)
    # The probe's byte count from shapes on the meta device is what the engine's cast leaves.
    engine.cast_for_gpu(model)
    held = sum(t.numel() * t.element_size() for m in (model.encoder, model.decoder)
               for t in (*m.parameters(), *m.buffers()))
    assert held == gpu_probe.weight_info("tiny").fp16_bytes


def test_cpu_run_measures_faster_whisper_per_compute_type(cpu_run: tuple[str, str, Path]) -> None:
    text, _, models = cpu_run
    section = "faster-whisper (CTranslate2) per model and compute type (cpu)"
    header = _header(text, section)
    rows = {ct: dict(zip(header, _row(text, section, "tiny", ct), strict=True))
            for ct in ("int8", "float32")}
    for ct, row in rows.items():
        assert 0 < int(row["tokens decoded"]) <= 16, row  # bounded as the openai side is
        assert _number(row["peak MiB"]) >= _number(row["after load MiB"]) > 0, row
        estimate = catalog.default_vram_mb("tiny", catalog.FASTER, ct)
        assert row["default estimate MiB (× peak)"] == f"{int(estimate * 1.2):,}", row
        assert _number(row["peak / openai fp16 need"]) > 0, row
    # int8 weights are a quarter of float32's: the loaded model holds far less memory
    after_load = {ct: _number(row["after load MiB"]) for ct, row in rows.items()}
    assert after_load["int8"] < 0.6 * after_load["float32"], after_load
    assert (models / "tiny" / "model.bin").is_file()  # the CTranslate2 folder, cached


def test_cpu_run_compares_faster_tasks_at_once_with_batching(
        cpu_run: tuple[str, str, Path]) -> None:
    text, _, _ = cpu_run
    section = "faster-whisper throughput: tiny, k tasks at once vs one task batched k"
    body = _table_after(text, f"## {section}")
    assert [r["how"] for r in body] == ["1 task at once", "2 tasks at once", "1 task, batched 2"]
    cores = os.cpu_count() or 1
    assert [int(r["threads"]) for r in body] == [cores, max(1, cores // 2), cores]
    for r in body:
        assert r["compute type"] == "int8" and _number(r["audio s per wall s"]) > 0, r
    assert body[0]["speedup vs 1 task"] == "1.00×"

