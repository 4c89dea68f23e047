"""GPU backends, pinning and the per-process VRAM sampler: a worker runs (and is measured) on
the card NVML means, also on a machine with mixed cards where CUDA's default order (fastest
first) differs. pynvml and torch are faked, cards simulated: no GPU in CI."""

from __future__ import annotations

import os
import types

import pytest

from service import gpu, worker
from service.gpu import PeakSampler, SimulatedBackend
from tests.speech import wait_for

MiB = 1024 * 1024
PID = 4242


def fake_nvml(cards: list[dict]) -> types.ModuleType:
    """pynvml's names: cards in PCI bus order, each with name, uuid, memory and processes."""
    m = types.ModuleType("pynvml")
    m.NVMLError = RuntimeError
    m.nvmlInit = lambda: None
    m.nvmlDeviceGetCount = lambda: len(cards)
    m.nvmlDeviceGetHandleByIndex = lambda i: cards[i]
    m.nvmlDeviceGetHandleByUUID = lambda u: next(
        c for c in cards if c["uuid"] == (u.decode() if isinstance(u, bytes) else u))
    m.nvmlDeviceGetName = lambda h: h["name"].encode()
    m.nvmlDeviceGetUUID = lambda h: h["uuid"].encode()
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=h["total"], used=h["used"])
    m.nvmlDeviceGetComputeRunningProcesses = lambda h: h["procs"]
    return m


@pytest.fixture
def mixed(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """An older small card on the first PCI slot, a fast big one on the second (CUDA's
    default order would call the big one device 0)."""
    cards = [
        {"name": "GeForce GTX 1080", "uuid": "GPU-aaaa-1080", "total": 8192 * MiB,
         "used": 1000 * MiB, "procs": []},
        {"name": "RTX 4090", "uuid": "GPU-bbbb-4090", "total": 24564 * MiB, "used": 3000 * MiB,
         "procs": [types.SimpleNamespace(pid=os.getpid(), usedGpuMemory=2600 * MiB)]},
    ]
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake_nvml(cards))
    return cards


def test_devices_carry_their_uuid_and_a_worker_is_pinned_by_it(mixed) -> None:
    backend = gpu.NvmlBackend()
    [small, big] = backend.devices()
    assert (big.index, big.name, big.uuid, big.total_mb) == (1, "RTX 4090", "GPU-bbbb-4090", 24564)
    env = gpu.cuda_env(big.index, big.uuid)
    assert env == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "GPU-bbbb-4090"}
    # no UUID known: the index, in NVML's (PCI bus) order
    assert gpu.cuda_env(1, None)["CUDA_VISIBLE_DEVICES"] == "1"


def test_the_peak_is_read_from_the_pinned_card_not_cudas_device_zero(mixed) -> None:
    """Inside the worker torch sees only the pinned card, as its device 0; NVML must still be
    asked about card 1 (before: the index torch reported, i.e. the other card)."""
    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(
        memory_reserved=lambda: 2000 * MiB, max_memory_reserved=lambda: 2100 * MiB,
        current_device=lambda: 0))
    peak = worker._peak_vram_mb(fake_torch, 1, "GPU-bbbb-4090")
    assert peak == 2100 + (2600 - 2000)  # allocator peak + this process's CUDA context




def test_sampler_keeps_the_peak_a_process_held() -> None:
    """CTranslate2 allocates outside torch: the thread sees a peak that is already gone."""
    card = SimulatedBackend([24_000])
    card.set_external(0, 5000)  # another program (the user's LLM server)
    sampler = PeakSampler(card, 0, PID, interval_s=0.01).start()
    card.hold(PID, 0, 1500)
    wait_for(lambda: sampler.peak_mb >= 1500, timeout=10)
    card.hold(PID, 0, 900)  # the model's working memory shrinks again
    assert sampler.stop() == 1500 and sampler.per_process is True


def test_without_per_process_figures_the_cards_growth_is_taken() -> None:
    """Windows WDDM reports no per-process memory: used-memory delta since the start."""
    card = SimulatedBackend([24_000], per_process=False)
    card.set_external(0, 5000)
    sampler = PeakSampler(card, 0, PID, interval_s=0.01).start()
    card.hold(PID, 0, 2100)
    wait_for(lambda: sampler.peak_mb >= 2100, timeout=10)
    card.release(PID)
    assert sampler.stop() == 2100 and sampler.per_process is False


def test_nothing_seen_is_no_measurement() -> None:
    card = SimulatedBackend([8_000])
    sampler = PeakSampler(card, 0, PID, interval_s=0.01).start()
    assert sampler.stop() is None
