"""Tensor memory: augment-on-read, soft targets, MIR, k-means prototypes."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from tau2.continual_learning.supervised.batch import Batch
from tau2.continual_learning.supervised.memory import (
    GaussianNoise,
    KMeansMemory,
    RandomShift,
    TensorMemory,
    mir_retrieve,
)


def test_iba_augments_on_read_only():
    torch.manual_seed(0)
    memory = TensorMemory(20, "reservoir", seed=0, augment=GaussianNoise(0.1, clamp=None))
    x, y = torch.rand(20, 64), torch.randint(0, 10, (20,))
    memory.add(x, y)
    stored_before = memory.tensors()[0].clone()
    a, b = memory.get(range(20)), memory.get(range(20))
    assert not torch.allclose(a.x, stored_before[a.indices])  # replayed copies are augmented
    assert not torch.allclose(a.x, b.x)  # and differently on every read
    assert torch.equal(memory.tensors()[0], stored_before)  # the stored tensors never change
    assert torch.equal(memory.get(range(20), augment=False).x, stored_before)


def test_random_shift_moves_pixels_and_keeps_shape():
    torch.manual_seed(0)
    img = torch.zeros(1, 64)
    img[0, 3 * 8 + 3] = 1.0
    shifted = torch.cat([RandomShift(1, (8, 8))(img) for _ in range(30)])
    assert shifted.shape == (30, 64)
    positions = {int(row.argmax()) for row in shifted}
    assert len(positions) > 3 and all(
        abs(p // 8 - 3) <= 1 and abs(p % 8 - 3) <= 1 for p in positions
    )


def test_stored_logits_become_soft_targets():
    memory = TensorMemory(4, "fifo", store_logits=True)
    logits = torch.randn(4, 3)
    memory.add(torch.rand(4, 2), torch.tensor([0, 1, 2, 0]), logits=logits)
    batch = memory.get([2, 0])
    assert torch.equal(batch.soft_targets, logits[[2, 0]])
    memory.set_logits([0], torch.zeros(1, 3))
    assert torch.equal(memory.get([0]).soft_targets, torch.zeros(1, 3))
    with pytest.raises(ValueError, match="store_logits=True"):
        TensorMemory(4, store_logits=True).add(torch.rand(1, 2), torch.tensor([0]))


def _ce(outputs, batch):
    return nn.functional.cross_entropy(outputs, batch.y, reduction="none")


def test_mir_returns_the_most_interfered_candidates():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    memory = TensorMemory(30, "fifo", seed=0)
    memory.add(torch.randn(30, 4), torch.randint(0, 3, (30,)))
    new = Batch(torch.randn(8, 4), torch.full((8,), 2))
    state = copy.deepcopy(memory.rng.bit_generator.state)
    chosen = mir_retrieve(model, memory, new, 5, _ce, lr=0.5, num_candidates=30)
    # brute force: a real SGD step on a copy, then the top-5 loss increases
    memory.rng.bit_generator.state = state
    candidates = memory.sample(30, augment=False)
    stepped = copy.deepcopy(model)
    opt = torch.optim.SGD(stepped.parameters(), lr=0.5)
    _ce(stepped(new.x), new).mean().backward()
    opt.step()
    with torch.no_grad():
        increase = _ce(stepped(candidates.x), candidates) - _ce(model(candidates.x), candidates)
    expected = set(candidates.indices[torch.topk(increase, 5).indices].tolist())
    assert set(chosen.indices.tolist()) == expected
    assert all(p.grad is None for p in model.parameters())  # the real model is untouched


def test_kmeans_memory_stores_per_class_prototypes():
    rng = np.random.default_rng(0)
    centers = {
        0: [(-5.0, 0.0), (5.0, 0.0)],
        1: [(0.0, -5.0), (0.0, 5.0)],
        2: [(9.0, 9.0), (-9.0, -9.0)],
    }

    def sample(label):
        pts = np.concatenate([rng.normal(c, 0.05, (50, 2)) for c in centers[label]])
        return torch.tensor(pts, dtype=torch.float32), torch.full((100,), label)

    km = KMeansMemory(capacity=4, seed=0)
    for label in (0, 1):
        x, y = sample(label)
        km.observe(x, y, y.tolist(), task_id=0)
    km.consolidate()
    x, y, _ = km.memory.tensors()
    assert len(km) == 4 and sorted(y.tolist()) == [0, 0, 1, 1]
    for label in (0, 1):
        got = sorted(map(tuple, x[y == label].round().tolist()))
        assert got == sorted(centers[label])
    x2, y2 = sample(2)
    km.observe(x2, y2, y2.tolist(), task_id=1)
    km.consolidate()  # 3 classes, budget 4 -> one prototype per class: its weighted mean
    x, y, tasks = km.memory.tensors()
    assert sorted(y.tolist()) == [0, 1, 2]
    assert torch.allclose(x[y == 0], torch.zeros(1, 2), atol=0.1)
    assert tasks[y == 2].item() == 1
