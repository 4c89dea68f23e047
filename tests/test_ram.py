"""RAM admission: estimates from the table, then from measured peaks; running workers count."""

from __future__ import annotations

import logging

from service import catalog, ram
from service.ram import RamBudget


def _budget(free: int, rss: dict[int, int] | None = None, reserve: int = 1000) -> RamBudget:
    return RamBudget(reserve, 10, available_mb=lambda: free,
                     rss_mb=lambda pid: (rss or {}).get(pid))


def test_the_default_estimate_grows_with_the_model_and_the_piece_size() -> None:
    tiny, large = ram.default_estimate_mb("tiny", 10), ram.default_estimate_mb("large-v3", 10)
    assert tiny == ram.BASE_MB + 39 * 4 + 2 * 10 * ram.PIECE_MB_PER_MINUTE
    assert large - tiny == (1550 - 39) * 4
    assert ram.default_estimate_mb("tiny", 5) < tiny  # smaller pieces, less memory
    assert ram.default_estimate_mb("my-small-zh", 10) == ram.default_estimate_mb("small", 10)
    assert catalog.parameters_millions("unknown-name") == catalog.OFFICIAL["large"][0]


def test_a_measured_peak_replaces_the_table_and_only_grows() -> None:
    budget = _budget(10_000)
    budget.learn("base", 700)
    budget.learn("base", 650)
    budget.learn("base", None)
    assert budget.estimate_mb("base") == 700
    assert budget.estimate_mb("tiny") == ram.default_estimate_mb("tiny", 10)
    # another engine's workers are measured apart (CTranslate2 int8 holds far less)
    assert budget.estimate_mb("base", "faster-whisper") == ram.default_estimate_mb("base", 10)
    budget.learn("base", 400, "faster-whisper")
    assert budget.estimate_mb("base", "faster-whisper") == 400
    assert budget.estimate_mb("base") == 700


def test_memory_running_workers_will_still_take_counts_as_taken() -> None:
    budget = _budget(free=3000, rss={11: 200})
    budget.learn("base", 1500)
    # free beyond the reserve: 2000; the running worker (pid 11) will take 1300 more
    assert not budget.fits(2, "base", [(11, "base", "openai-whisper")])
    budget.rss_mb = lambda pid: 1500  # it has reached its peak: what is free is really free
    assert budget.fits(2, "base", [(11, "base", "openai-whisper")])


def test_with_nothing_running_a_task_always_starts(caplog) -> None:
    budget = _budget(free=100)
    assert budget.fits(1, "large-v3", [])
    with caplog.at_level(logging.INFO, logger="service.ram"):
        assert not budget.fits(2, "large-v3", [(None, "tiny", "openai-whisper")])
        assert not budget.fits(2, "large-v3", [(None, "tiny", "openai-whisper")])
    assert caplog.text.count("task 2 waits for memory") == 1  # said once, not every tick
