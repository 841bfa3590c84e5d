"""Tensor replay memory: raw samples on CPU, streamed to the device one mini-batch at a time.

The memory is preallocated on the first :meth:`TensorMemory.add` (shapes and dtypes from that
batch), so device memory stays constant however large the buffer grows. An insertion policy
(:mod:`~tau2.continual_learning.insertion_policies`) decides which slot an item overwrites.
Optional stored logits give soft targets; an optional read-time augmentation
implements independent buffer augmentation (stored tensors are never modified).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch

from tau2.continual_learning.insertion_policies import InsertionPolicy, make_insertion_policy
from tau2.continual_learning.supervised.batch import Batch
from tau2.continual_learning.supervised.memory.augment import Augmentation


class TensorMemory:
    """Fixed-capacity CPU store of ``(x, y[, logits], task_id)`` with a pluggable policy."""

    def __init__(
        self,
        capacity: int,
        policy: str | InsertionPolicy = "reservoir",
        seed: int | None = 0,
        store_logits: bool = False,
        augment: Augmentation | None = None,
    ) -> None:
        self.policy = (
            policy
            if isinstance(policy, InsertionPolicy)
            else make_insertion_policy(policy, capacity, seed)
        )
        if self.policy.capacity != capacity:
            raise ValueError(
                f"policy capacity {self.policy.capacity} != memory capacity {capacity}"
            )
        self.capacity = capacity
        self.store_logits = store_logits
        self.augment = augment
        self.rng = np.random.default_rng(None if seed is None else seed + 1)
        self._x: torch.Tensor | None = None
        self._y: torch.Tensor | None = None
        self._logits: torch.Tensor | None = None
        self._task = torch.zeros(capacity, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.policy)

    def _allocate(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor | None) -> None:
        self._x = torch.zeros((self.capacity, *x.shape[1:]), dtype=x.dtype)
        self._y = torch.zeros((self.capacity, *y.shape[1:]), dtype=y.dtype)
        if self.store_logits:
            if logits is None:
                raise ValueError("store_logits=True but add() was called without logits")
            self._logits = torch.zeros((self.capacity, *logits.shape[1:]), dtype=torch.float32)

    def add(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        buckets: Sequence[Hashable] | None = None,
        scores: Sequence[float] | torch.Tensor | None = None,
        logits: torch.Tensor | None = None,
        task_id: int = 0,
    ) -> list[int | None]:
        """Offer every row of the batch to the policy; returns the slot of each (or None)."""
        x, y = x.detach().cpu(), y.detach().cpu()
        n = x.shape[0]
        if y.shape[0] != n or (buckets is not None and len(buckets) != n):
            raise ValueError(f"add() needs as many targets/buckets as inputs ({n})")
        if self._x is None:
            self._allocate(x, y, logits)
        score_list = None if scores is None else [float(s) for s in scores]
        logits = None if logits is None else logits.detach().float().cpu()
        slots = []
        for i in range(n):
            bucket = task_id if buckets is None else buckets[i]
            slot = self.policy.add(bucket, None if score_list is None else score_list[i])
            slots.append(slot)
            if slot is None:
                continue
            self._x[slot] = x[i]
            self._y[slot] = y[i]
            self._task[slot] = task_id
            if self._logits is not None:
                if logits is None:
                    raise ValueError("this memory stores logits: pass logits= to add()")
                self._logits[slot] = logits[i]
        return slots

    def clear(self) -> None:
        """Forget every stored item (the policy's RNG keeps its state)."""
        rng_state = self.policy.rng.bit_generator.state
        self.policy = type(self.policy)(self.capacity, None)
        self.policy.rng.bit_generator.state = rng_state

    def random_indices(self, n: int) -> np.ndarray:
        """Up to ``n`` distinct stored slots, uniformly at random."""
        size = len(self)
        return self.rng.choice(size, size=min(n, size), replace=False) if size else np.empty(0, int)

    def get(
        self,
        indices: Sequence[int] | np.ndarray,
        device: torch.device | str = "cpu",
        augment: bool = True,
    ) -> Batch:
        """The stored items at ``indices`` as a replay :class:`Batch` on ``device``.

        Augmentation (if configured and ``augment``) is applied to the copy sent out.
        """
        if self._x is None or self._y is None:
            raise RuntimeError("the memory is empty")
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        x = self._x[idx]
        if augment and self.augment is not None:
            x = self.augment(x)
        batch = Batch(
            x=x,
            y=self._y[idx],
            kind="replay",
            soft_targets=None if self._logits is None else self._logits[idx],
            indices=idx,
            task_ids=self._task[idx],
        )
        return batch.to(device)

    def sample(self, n: int, device: torch.device | str = "cpu", augment: bool = True) -> Batch:
        """``n`` random items (fewer if the memory holds fewer) streamed to ``device``."""
        return self.get(self.random_indices(n), device, augment)

    def update_scores(
        self, indices: Sequence[int] | torch.Tensor, losses: Sequence[float] | torch.Tensor
    ) -> None:
        """Refresh the stored losses of replayed items (LARS)."""
        if isinstance(indices, torch.Tensor):
            indices = indices.cpu().numpy()
        if isinstance(losses, torch.Tensor):
            losses = losses.detach().float().cpu().numpy()
        self.policy.update_scores(indices, losses)

    def set_logits(self, indices: Sequence[int] | torch.Tensor, logits: torch.Tensor) -> None:
        """Overwrite the stored logits (soft targets) of ``indices``, e.g. with the trained
        model's outputs at the end of a task."""
        if self._logits is None:
            raise RuntimeError("this memory does not store logits (store_logits=False or empty)")
        self._logits[torch.as_tensor(indices, dtype=torch.long)] = logits.detach().float().cpu()

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Views of the stored ``(x, y, task_id)`` (unaugmented)."""
        if self._x is None or self._y is None:
            raise RuntimeError("the memory is empty")
        n = len(self)
        return self._x[:n], self._y[:n], self._task[:n]

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "rng": self.rng.bit_generator.state,
            "x": self._x,
            "y": self._y,
            "logits": self._logits,
            "task": self._task.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.rng.bit_generator.state = state["rng"]
        self._x, self._y, self._logits = state["x"], state["y"], state["logits"]
        self._task = state["task"].clone()
