"""GPU backends and the per-process VRAM sampler, on simulated cards (CI has no GPU)."""

from __future__ import annotations

from service.gpu import PeakSampler, SimulatedBackend
from tests.speech import wait_for

PID = 4242


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
