"""K-means episodic memory: per-bucket prototypes instead of raw samples ("tiny episodic
memories").

During a task :meth:`KMeansMemory.observe` keeps a bounded uniform sample of the incoming data
per bucket (class label for classification, task for regression). :meth:`consolidate` (at the
end of a task) splits the capacity equally over all buckets seen so far and replaces each
bucket's raw samples by k-means centroids; buckets that must shrink are re-clustered from their
previous prototypes, weighted by how many samples each prototype stood for. Prototypes live in a
:class:`TensorMemory`, so replaying them works like any other memory.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import torch

from tau2.continual_learning.insertion_policies import make_insertion_policy
from tau2.continual_learning.supervised.memory.tensor_memory import TensorMemory


class KMeansMemory:
    """Per-bucket k-means prototypes with a total budget of ``capacity``."""

    def __init__(self, capacity: int, seed: int = 0, max_pending_per_bucket: int = 1000) -> None:
        self.memory = TensorMemory(capacity, policy="fifo", seed=seed)
        self.capacity, self.seed = capacity, seed
        self.max_pending = max_pending_per_bucket
        # bucket -> (points [n, d] with x and y flattened, weights [n], task_id)
        self.prototypes: dict[Hashable, tuple[np.ndarray, np.ndarray, int]] = {}
        self._pending: dict[Hashable, Any] = {}
        self._shapes: tuple[tuple[int, ...], tuple[int, ...], torch.dtype] | None = None

    def __len__(self) -> int:
        return len(self.memory)

    def observe(
        self, x: torch.Tensor, y: torch.Tensor, buckets: list[Hashable], task_id: int
    ) -> None:
        """Remember the incoming samples (a reservoir of ``max_pending`` per bucket)."""
        x, y = x.detach().cpu(), y.detach().cpu()
        self._shapes = (tuple(x.shape[1:]), tuple(y.shape[1:]), y.dtype)
        points = torch.cat(
            [x.reshape(len(x), -1).float(), y.reshape(len(y), -1).float()], 1
        ).numpy()
        for point, bucket in zip(points, buckets, strict=True):
            if bucket not in self._pending:
                policy = make_insertion_policy("reservoir", self.max_pending, self.seed)
                self._pending[bucket] = (
                    policy,
                    np.zeros((self.max_pending, points.shape[1])),
                    task_id,
                )
            policy, store, _ = self._pending[bucket]
            slot = policy.add(bucket)
            if slot is not None:
                store[slot] = point

    def _cluster(
        self, points: np.ndarray, weights: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        if len(points) <= k:
            return points, weights
        from sklearn.cluster import KMeans  # imported here: sklearn.cluster is slow to import

        km = KMeans(n_clusters=k, n_init=3, random_state=self.seed).fit(
            points, sample_weight=weights
        )
        counts = np.bincount(km.labels_, weights=weights, minlength=k)
        return km.cluster_centers_, counts

    def consolidate(self) -> None:
        """Turn pending samples into prototypes and rebalance the budget over all buckets."""
        for bucket, (policy, store, task_id) in self._pending.items():
            raw = store[: len(policy)]
            if bucket in self.prototypes:
                old, w, _ = self.prototypes[bucket]
                raw_w = np.concatenate([w, np.ones(len(raw))])
                raw = np.concatenate([old, raw])
            else:
                raw_w = np.ones(len(raw))
            self.prototypes[bucket] = (raw, raw_w, task_id)
        self._pending = {}
        if not self.prototypes or self._shapes is None:
            return
        per_bucket = self.capacity // len(self.prototypes)
        if per_bucket < 1:
            raise ValueError(
                f"k-means memory capacity {self.capacity} is smaller than the number of buckets "
                f"({len(self.prototypes)}): every bucket needs at least one prototype"
            )
        for bucket, (points, weights, task_id) in self.prototypes.items():
            centers, counts = self._cluster(points, weights, per_bucket)
            self.prototypes[bucket] = (centers, counts, task_id)
        self._rebuild()

    def _rebuild(self) -> None:
        assert self._shapes is not None
        x_shape, y_shape, y_dtype = self._shapes
        x_size = int(np.prod(x_shape))
        self.memory.clear()
        for bucket, (points, _, task_id) in self.prototypes.items():
            pts = torch.as_tensor(points, dtype=torch.float32)
            x = pts[:, :x_size].reshape(len(pts), *x_shape)
            y = pts[:, x_size:].reshape(len(pts), *y_shape)
            y = y.round().to(y_dtype) if not y_dtype.is_floating_point else y.to(y_dtype)
            self.memory.add(x, y, buckets=[bucket] * len(pts), task_id=task_id)
