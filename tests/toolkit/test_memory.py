"""release_memory hands memory that Python and the C allocator freed back to the system. Each scenario runs in a fresh interpreter: how
much of a test process's heap is already free depends on the tests before it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tau2.continual_learning.memory import release_memory

FREED_BUT_HELD = """
import torch
from tau2.continual_learning.memory import release_memory, resident_mb

def freed_but_held(mb):
    # as a phase's tensors: a large one freed (glibc then raises its mmap threshold to its
    # size), then 1 MB tensors, each followed by a small survivor so the heap's top stays in
    # use, freed: glibc keeps them
    big = torch.ones(4 << 20)
    del big
    survivors, blocks = [], []
    for _ in range(mb):
        blocks.append(torch.ones(256 * 1024))
        survivors.append(torch.ones(16))
    del blocks
    return survivors
"""


def _run(body: str) -> dict:
    """``body`` (after :data:`FREED_BUT_HELD`) in a fresh interpreter; its last stdout line,
    parsed as JSON."""
    out = subprocess.run(
        [sys.executable, "-c", FREED_BUT_HELD + body],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


pytestmark = pytest.mark.skipif(not release_memory(), reason="malloc_trim is glibc's")


def test_release_memory_returns_freed_heap_to_the_system():
    result = _run(
        """
import json
survivors = freed_but_held(300)
held = resident_mb()
release_memory()
print(json.dumps({"held": held, "after": resident_mb()}))
"""
    )
    assert result["held"] - result["after"] > 200, result  # most of the 300 MB went back
