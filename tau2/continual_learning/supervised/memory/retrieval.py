"""Retrieval from a replay memory: random, or maximally interfered retrieval (MIR).

MIR (Aljundi et al. 2019) replays the stored samples that the coming update would hurt most:
take a random candidate subset, make a *virtual* SGD step on the current batch, and keep the
candidates whose loss increases most. The virtual step uses ``torch.func.functional_call`` on
updated parameter copies, so the model itself is never touched.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call

from tau2.continual_learning.supervised.batch import Batch
from tau2.continual_learning.supervised.memory.tensor_memory import TensorMemory

PerSampleLoss = Callable[[torch.Tensor, Batch], torch.Tensor]


def mir_retrieve(
    model: nn.Module,
    memory: TensorMemory,
    new_batch: Batch,
    n: int,
    per_sample_loss: PerSampleLoss,
    lr: float,
    num_candidates: int = 50,
    device: torch.device | str = "cpu",
) -> Batch:
    """The ``n`` of ``num_candidates`` random stored samples with the largest loss increase
    after a virtual SGD step (learning rate ``lr``) on ``new_batch``."""
    if num_candidates < n:
        raise ValueError(f"num_candidates ({num_candidates}) must be >= n ({n})")
    candidates = memory.sample(num_candidates, device, augment=False)
    if len(candidates) <= n:
        return memory.get(candidates.indices, device)
    params = {k: p for k, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())
    loss_new = per_sample_loss(model(new_batch.x), new_batch).mean()
    grads = torch.autograd.grad(loss_new, list(params.values()), allow_unused=True)
    virtual = {
        k: p if g is None else p - lr * g for (k, p), g in zip(params.items(), grads, strict=True)
    }
    with torch.no_grad():
        before = per_sample_loss(model(candidates.x), candidates)
        after = per_sample_loss(
            functional_call(model, {**buffers, **virtual}, (candidates.x,)), candidates
        )
    top = torch.topk(after - before, n).indices.cpu()
    return memory.get(candidates.indices[top], device)
