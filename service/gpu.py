"""GPU backends: what cards there are and how much memory is used on them.

The parent process never initialises CUDA (it could not fork afterwards, and a CUDA context
costs VRAM); it asks NVML. The simulated backend stands in for GPUs where none exist (CI, the
scheduling simulator): fake cards of given sizes whose "used" memory follows what the running
simulated tasks hold plus an external load that tests can script.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

MiB = 1024 * 1024


@dataclass(frozen=True)
class GpuInfo:
    index: int  # NVML's index (PCI bus order)
    name: str
    total_mb: int
    used_mb: int  # by every process on the card, ours and other programs'
    uuid: str | None = None  # NVML's "GPU-…" UUID: the one name CUDA and NVML agree on

    @property
    def free_mb(self) -> int:
        return self.total_mb - self.used_mb


class GpuBackend(Protocol):
    simulated: bool

    def devices(self) -> list[GpuInfo]: ...

    def process_used_mb(self, index: int, pid: int) -> int | None:
        """Memory one process holds on a card, or None where the driver won't say (WDDM)."""
        ...


def cuda_env(index: int, uuid: str | None) -> dict[str, str]:
    """The environment that pins a worker to one card *as NVML numbers it*.

    CUDA orders devices fastest-first by default, NVML by PCI bus: on a machine with mixed
    cards index 0 is not the same card for both, and a worker would run (and be calibrated) on
    the wrong one. The UUID names the card unambiguously; PCI_BUS_ID order makes a plain
    index agree too (where no UUID is known, and for anything that enumerates devices)."""
    return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES": uuid if uuid else str(index)}


def nvml_handle(nvml, index: int, uuid: str | None):  # noqa: ANN001, ANN201 - pynvml's types
    """The NVML handle of the card a worker was pinned to (by UUID when known)."""
    if uuid:
        return nvml.nvmlDeviceGetHandleByUUID(uuid.encode() if isinstance(uuid, str) else uuid)
    return nvml.nvmlDeviceGetHandleByIndex(index)


class NvmlBackend:
    """Real NVIDIA GPUs through nvidia-ml-py."""

    simulated = False

    def __init__(self, indexes: Sequence[int] | None = None) -> None:
        import pynvml

        self._nvml = pynvml
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        self._indexes = [i for i in range(count) if indexes is None or i in indexes]

    def devices(self) -> list[GpuInfo]:
        out = []
        for i in self._indexes:
            h = self._nvml.nvmlDeviceGetHandleByIndex(i)
            mem = self._nvml.nvmlDeviceGetMemoryInfo(h)
            name = self._nvml.nvmlDeviceGetName(h)
            name = name.decode() if isinstance(name, bytes) else name
            uuid = self._nvml.nvmlDeviceGetUUID(h)
            uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
            out.append(GpuInfo(i, name, mem.total // MiB, mem.used // MiB, uuid))
        return out

    def process_used_mb(self, index: int, pid: int) -> int | None:
        h = self._nvml.nvmlDeviceGetHandleByIndex(index)
        try:
            procs = self._nvml.nvmlDeviceGetComputeRunningProcesses(h)
        except self._nvml.NVMLError:
            return None
        for p in procs:
            if p.pid == pid:
                return None if p.usedGpuMemory is None else p.usedGpuMemory // MiB
        return 0


class SimulatedBackend:
    """Fake cards: used = external load + what simulated tasks currently hold.

    `per_process=False` behaves like Windows WDDM: the driver reports no per-process figure.
    """

    simulated = True

    def __init__(self, sizes_mb: Sequence[int], name: str = "Simulated GPU",
                 per_process: bool = True) -> None:
        self._lock = threading.Lock()
        self._total = list(sizes_mb)
        self._name = name
        self._per_process = per_process
        self._external = [0] * len(sizes_mb)
        self._held: dict[object, tuple[int, int]] = {}  # key → (index, MiB)

    def devices(self) -> list[GpuInfo]:
        with self._lock:
            used = list(self._external)
            for idx, mb in self._held.values():
                used[idx] += mb
            return [
                GpuInfo(i, f"{self._name} {t // 1024} GB", t, min(t, u))
                for i, (t, u) in enumerate(zip(self._total, used, strict=True))
            ]

    def process_used_mb(self, index: int, pid: int) -> int | None:
        if not self._per_process:
            return None
        with self._lock:
            held = self._held.get(pid)
            return held[1] if held and held[0] == index else 0

    # scripting hooks for tests and the simulator
    def set_external(self, index: int, mb: int) -> None:
        with self._lock:
            self._external[index] = mb

    def hold(self, key: object, index: int, mb: int) -> None:
        with self._lock:
            self._held[key] = (index, mb)

    def release(self, key: object) -> None:
        with self._lock:
            self._held.pop(key, None)


class PeakSampler:
    """The most memory one process held on one card while it ran, sampled in a thread.

    Why: CTranslate2 (faster-whisper) allocates outside torch, so torch's allocator statistics
    say nothing; NVML's per-process figure does. Where the driver gives none (Windows WDDM:
    None), the card's used memory above what it was at the start is taken instead, which also
    counts other programs' growth meanwhile: an estimate that errs on the safe side.
    """

    def __init__(self, backend: GpuBackend, index: int, pid: int,
                 interval_s: float = 0.05) -> None:
        self.backend, self.index, self.pid, self.interval_s = backend, index, pid, interval_s
        self._baseline = self._card_used()
        self.peak_mb = 0
        self.per_process: bool | None = None  # known after the first sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vram-sampler", daemon=True)

    def _card_used(self) -> int:
        for gpu in self.backend.devices():
            if gpu.index == self.index:
                return gpu.used_mb
        return 0

    def sample(self) -> int:
        """One reading (also called by the thread); returns the peak so far."""
        try:
            mine = self.backend.process_used_mb(self.index, self.pid)
            self.per_process = mine is not None
            if not mine:  # None (WDDM) or 0 (containers: NVML lists host PIDs, not ours)
                mine = max(0, self._card_used() - self._baseline)
        except Exception as err:  # noqa: BLE001 - a failed reading must not fail the task
            log.debug("VRAM sample failed: %s", err)
            return self.peak_mb
        self.peak_mb = max(self.peak_mb, int(mine))
        return self.peak_mb

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def start(self) -> PeakSampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> int | None:
        """Stop sampling; the peak in MiB (None if nothing was ever seen)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sample()
        return self.peak_mb or None


def detect(devices: str | list[int], simulate: list[int] | None) -> GpuBackend | None:
    """The backend to use, or None for CPU mode (said once in the log)."""
    if simulate:
        log.info("using %d simulated GPU(s): %s MiB", len(simulate), simulate)
        return SimulatedBackend(simulate)
    if devices == "none":
        log.info("GPUs disabled in settings (gpu.devices: none): running on the CPU")
        return None
    try:
        backend = NvmlBackend(None if devices == "all" else list(devices))
    except Exception as err:  # noqa: BLE001 - NVML missing, no driver, no devices
        log.info("no NVIDIA GPU found (%s): running on the CPU", type(err).__name__)
        return None
    if not backend.devices():
        log.info("no usable NVIDIA GPU: running on the CPU")
        return None
    return backend
