"""VRAM admission on simulated GPUs (CI has none): budgets, external load, placement."""

from __future__ import annotations

import random

from service.config import GpuSettings
from service.gpu import SimulatedBackend
from service.vram import VramPool


def pool(sizes: list[int], **cfg) -> tuple[VramPool, SimulatedBackend]:
    backend = SimulatedBackend(sizes)
    return VramPool(backend, GpuSettings(**cfg)), backend


def fill(p: VramPool, models: list[str]) -> list[tuple[int, int]]:
    placed = []
    for tid, model in enumerate(models):
        where = p.place(model)
        if where is None:
            continue
        p.reserve(tid, *where)
        p.materialise(tid)
        placed.append(where)
    return placed


def test_admission_never_exceeds_the_budget() -> None:
    rng = random.Random(7)
    names = ["tiny", "base", "small", "medium", "large-v3", "turbo"]
    for _ in range(50):
        p, backend = pool([24576, 81920], reserved_mb=1024, max_tasks_per_gpu=50)
        fill(p, [rng.choice(names) for _ in range(60)])
        for gpu in p.snapshot():
            assert gpu["reserved_mb"] <= gpu["budget_mb"]
            assert gpu["used_mb"] <= gpu["total_mb"] * 0.9


def test_budget_is_total_times_utilisation_minus_reserved() -> None:
    p, _ = pool([24576], max_utilization=0.9, reserved_mb=1024)
    assert p.snapshot()[0]["budget_mb"] == int(24576 * 0.9) - 1024


def test_external_load_stops_new_admissions_on_that_card() -> None:
    p, backend = pool([24576, 24576], reserved_mb=0, max_tasks_per_gpu=10)
    backend.set_external(0, 20000)  # an LLM server takes most of card 0
    placed = fill(p, ["small"] * 6)
    assert placed and all(gpu == 1 for gpu, _ in placed)
    backend.set_external(1, 24000)
    assert p.place("small") is None


def test_unmaterialised_reservations_count_against_live_memory() -> None:
    p, backend = pool([12288], reserved_mb=0, max_tasks_per_gpu=10)
    gpu, est = p.place("medium")  # 5120 × 1.2 = 6144
    p.reserve(1, gpu, est)  # the worker has not allocated yet: NVML shows nothing
    assert p.place("medium") is None  # 0 used + 6144 pending + 6144 > 11059


def test_two_cards_of_different_sizes_fill_by_least_load() -> None:
    p, _ = pool([24576, 81920], reserved_mb=1024, max_tasks_per_gpu=20)
    placed = fill(p, ["large-v3"] * 12)
    on = [gpu for gpu, _ in placed]
    assert on[0] == 1  # the empty big card is least loaded
    # budgets: 81920 × 0.9 − 1024 = 72704 → 5 × 12288; 24576 × 0.9 − 1024 = 21094 → 1
    assert on.count(1) == 5 and on.count(0) == 1
    assert on[:4] == [1, 1, 1, 0]  # the small card is used once it is the less loaded one


def test_max_tasks_per_gpu_holds() -> None:
    p, _ = pool([81920], max_tasks_per_gpu=3)
    assert len(fill(p, ["tiny"] * 10)) == 3


def test_release_returns_the_memory() -> None:
    p, backend = pool([8192], reserved_mb=0, max_tasks_per_gpu=10)
    placed = fill(p, ["medium"] * 3)
    assert len(placed) == 1 and backend.devices()[0].used_mb == 6144
    p.release(0)
    assert backend.devices()[0].used_mb == 0 and p.place("medium") is not None
