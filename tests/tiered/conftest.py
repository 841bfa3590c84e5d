"""Fixtures of the tiered-storage tests: small real lakes, streams of episodes, the example."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from tau2.continual_learning.tiered import Field

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiered_dqn.py"

FIELDS = {
    "obs": Field((2, 4, 4), torch.uint8),
    "action": Field((), torch.int64),
    "reward": Field((), torch.float32),
    "terminated": Field((), torch.bool),
}


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny tensors: one thread is faster and keeps runs deterministic."""
    torch.set_num_threads(1)


def _episode_stream(start: int, lengths: list[int]) -> dict[str, torch.Tensor]:
    """Consecutive episodes of the given lengths; transition ``i`` has action ``start + i``.

    Every frame is distinct (its bytes encode a frame number), the next observation of a
    step is the observation of the next one, and each episode ends in its own terminal frame.
    """
    obs, nxt, terminated = [], [], []
    frame = 2 * start  # frame numbers never collide between streams with distinct starts
    for length in lengths:
        for t in range(length):
            obs.append(frame + t)
            nxt.append(frame + t + 1)
            terminated.append(t == length - 1)
        frame += length + 1
    n = len(obs)

    def frames(numbers: list[int]) -> torch.Tensor:
        x = torch.tensor(numbers, dtype=torch.int64)
        digits = torch.stack([(x >> (8 * b)) & 255 for b in range(4)], 1).to(torch.uint8)
        return digits.repeat(1, 8).view(n, 2, 4, 4)

    return {
        "obs": frames(obs),
        "next_obs": frames(nxt),
        "action": torch.arange(start, start + n),
        "reward": torch.ones(n),
        "terminated": torch.tensor(terminated),
    }


def _frame_number(frames: torch.Tensor) -> torch.Tensor:
    """Inverse of the encoding in ``episode_stream``."""
    digits = frames.reshape(frames.shape[0], -1)[:, :4].long()
    return sum(digits[:, b] << (8 * b) for b in range(4))


@pytest.fixture
def fields() -> dict[str, Field]:
    """Small frames (2, 4, 4) uint8 plus action, reward, terminated."""
    return dict(FIELDS)


@pytest.fixture
def episode_stream():
    return _episode_stream


@pytest.fixture
def frame_number():
    return _frame_number


@pytest.fixture(scope="session")
def example():
    """The DQN example module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("tiered_dqn", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["tiered_dqn"] = module
    spec.loader.exec_module(module)
    return module
