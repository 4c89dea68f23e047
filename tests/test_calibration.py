"""VRAM estimates: defaults, convergence to measured peaks, persistence, OOM growth."""

from __future__ import annotations

import random

from service import db
from service.calibration import FASTER_RTF_RATIO, Calibration
from service.clock import SystemClock
from tests.conftest import BOTH_BACKENDS, run_together


def make(db_url: str, clock) -> Calibration:  # noqa: ANN001
    return Calibration(db.make_engine(db_url), clock, confidence_factor=1.2, k=3.0, window=20)


def test_default_estimate_is_the_table_times_confidence(db_url: str, clock) -> None:
    cal = make(db_url, clock)
    assert cal.estimate_mb("H100", "large-v3") == int(10240 * 1.2)
    assert cal.estimate_mb("H100", "tiny.en") == int(1024 * 1.2)


def test_estimate_converges_to_measured_peaks_and_survives_restart(db_url: str, clock) -> None:
    cal = make(db_url, clock)
    rng = random.Random(3)
    for _ in range(40):
        cal.record("H100", "large-v3", "fp16", peak_mb=rng.gauss(3300, 20), rtf=0.05)
    est = cal.estimate_mb("H100", "large-v3")
    assert 3300 < est < 3300 + 3 * 40  # mean + 3σ of the last 20 samples, far below 12288
    again = make(db_url, clock)  # a restart reads model_memory
    assert again.estimate_mb("H100", "large-v3") == est
    assert again.rtf("H100", "large-v3") == cal.rtf("H100", "large-v3")
    assert again.estimate_mb("A10", "large-v3") == int(10240 * 1.2)  # per GPU name
    [row] = again.table()
    assert row["samples"] == 20 and row["estimate_mb"] == est and row["default_mb"] == 12288


def test_out_of_memory_raises_the_estimate_above_measurements(db_url: str, clock) -> None:
    cal = make(db_url, clock)
    for _ in range(5):
        cal.record("H100", "small", "fp16", peak_mb=1000)
    before = cal.estimate_mb("H100", "small")
    after = cal.out_of_memory("H100", "small")
    assert after >= before * 1.25
    cal.record("H100", "small", "fp16", peak_mb=1000)
    assert cal.estimate_mb("H100", "small") == after  # the floor holds
    assert make(db_url, clock).estimate_mb("H100", "small") == after


def _record_many(db_url: str, n: int, go, out) -> None:  # noqa: ANN001
    cal = Calibration(db.make_engine(db_url), SystemClock(), window=1000)
    go.wait()
    for i in range(n):
        cal.record("H100", "turbo", "fp16", peak_mb=1000 + i)
    out.put(n)


@BOTH_BACKENDS
def test_nodes_recording_at_once_keep_every_sample(db_url: str, clock) -> None:  # noqa: ANN001
    """Several nodes share one database: no sample may be lost to a read-modify-write race,
    including the race to insert the first row."""
    assert run_together(_record_many, [(db_url, 15)] * 4) == [15] * 4
    cal = Calibration(db.make_engine(db_url), clock, window=1000)
    [row] = cal.table()
    assert row["samples"] == 4 * 15


def test_each_engine_and_compute_type_learns_apart(db_url: str, clock) -> None:
    """faster-whisper starts from the published ratios and learns in its own rows; the pool
    places a task with its own engine's estimate."""
    from service.config import GpuSettings
    from service.gpu import SimulatedBackend
    from service.vram import VramPool

    cal = make(db_url, clock)
    fw = dict(engine="faster-whisper")
    def published(mb: int) -> int:  # openai's table value × (faster / openai) × confidence
        return int(int(10240 * mb / 4708) * 1.2)

    assert cal.estimate_mb("H100", "large-v2", "float16", **fw) == published(4525)
    assert cal.estimate_mb("H100", "large-v2", "int8_float16", **fw) == published(2926)
    assert cal.estimate_mb("H100", "large-v2", "float16-batch8", **fw) == published(6090)
    assert cal.estimate_mb("H100", "large-v2", "int8_float16-batch8", **fw) == published(4500)
    for _ in range(10):
        cal.record("H100", "large-v2", "int8_float16", peak_mb=2000, **fw)
    assert cal.estimate_mb("H100", "large-v2", "int8_float16", **fw) == 2000
    assert cal.estimate_mb("H100", "large-v2") == int(10240 * 1.2)  # openai-whisper unchanged
    cal.out_of_memory("H100", "large-v2", "int8_float16", **fw)
    assert cal.estimate_mb("H100", "large-v2", "int8_float16", **fw) == 2500
    rows = {(r["engine"], r["precision"]): r for r in make(db_url, clock).table()}
    assert rows[("faster-whisper", "int8_float16")]["samples"] == 10
    pool = VramPool(SimulatedBackend([81_559], "H100"), GpuSettings(), cal.estimate_mb)
    name = pool.backend.devices()[0].name
    for _ in range(10):
        cal.record(name, "large-v2", "int8_float16", peak_mb=2000, **fw)
    assert pool.place("large-v2", engine="faster-whisper", precision="int8_float16") == (0, 2000)
    assert pool.place("large-v2") == (0, int(10240 * 1.2))


def test_speed_is_learned_per_engine_and_faster_whisper_starts_faster(db_url: str,
                                                                     clock) -> None:
    """The planner's runtime estimate reads the task's own engine: a faster-whisper file must
    not be planned with openai-whisper's speed (or the reverse) once either is measured."""
    cal = make(db_url, clock)
    openai = cal.rtf("H100", "small")
    faster = cal.rtf("H100", "small", "fp16", "faster-whisper")
    assert faster == openai * FASTER_RTF_RATIO < openai  # published figures until measured
    cal.record("H100", "small", "fp16", peak_mb=None, rtf=0.01, engine="faster-whisper")
    assert cal.rtf("H100", "small", "fp16", "faster-whisper") == 0.01
    assert cal.rtf("H100", "small") == openai  # openai-whisper's row is untouched
    assert make(db_url, clock).rtf("H100", "small", "fp16", "faster-whisper") == 0.01
