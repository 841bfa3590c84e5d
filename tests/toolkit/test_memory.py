"""release_memory hands memory that Python and the C allocator freed back to the system, and
the HF sampling backend does so when a run ends."""

from __future__ import annotations

import re

import pytest

from tau2.continual_learning.memory import release_memory
from tau2.continual_learning.rollout import EpisodeRunner, HFPolicy, load_tasks


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return int(re.search(r"VmRSS:\s+(\d+)", fh.read()).group(1)) / 1024


def _freed_but_held(mb: int) -> list[bytes]:
    """Allocate ``mb`` MB in 64 KB blocks (glibc's heap, below its mmap threshold) with a small
    survivor after every block, free the blocks: the heap's top stays in use, so glibc keeps
    the freed blocks instead of returning them. Returns the survivors."""
    survivors, blocks = [], []
    for _ in range(mb * 16):
        blocks.append(bytes(64 * 1024))
        survivors.append(bytes(1024))
    del blocks
    return survivors


@pytest.mark.skipif(not release_memory(), reason="malloc_trim is glibc's")
def test_release_memory_returns_freed_heap_to_the_system():
    survivors = _freed_but_held(300)
    held = _rss_mb()
    assert release_memory()
    assert held - _rss_mb() > 200  # most of the 300 MB freed went back
    assert len(survivors) == 300 * 16


@pytest.mark.skipif(not release_memory(), reason="malloc_trim is glibc's")
def test_a_finished_run_hands_its_freed_memory_back(tokenizer, tiny_model):
    policy = HFPolicy(tiny_model, tokenizer)
    with EpisodeRunner(policy, max_turns=1, max_new_tokens_per_turn=2) as runner:
        runner.run(load_tasks("telecom", "train", "skills")[:1])
        survivors = _freed_but_held(300)
        held = _rss_mb()
        runner.run(load_tasks("telecom", "train", "skills")[:1])  # clear_cache at its end
    assert held - _rss_mb() > 200
    assert len(survivors) == 300 * 16
