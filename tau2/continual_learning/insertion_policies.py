"""Buffer insertion policies, generic over what is stored.

A policy only decides *where* an incoming item goes: ``add(bucket, score)`` returns the slot
index to write the item to, or ``None`` when the item is discarded. The caller keeps the
items themselves (tensors in :class:`~tau2.continual_learning.supervised.memory.tensor_memory.TensorMemory`,
trajectories in the GRPO ``TrajectoryBuffer``), so one policy implementation serves both
trainers. Per slot the policy remembers the item's *bucket* (class label, domain, SNR bucket:
anything hashable) and an optional *score* (a loss: high = hard / informative).

For GRPO trajectories a natural score is ``1 - reward`` (failed episodes are "hard") or the
negative advantage magnitude ``-|A|`` (episodes that carry no learning signal are "easy");
LARS then evicts the easy ones first.

Policies (all seeded, deterministic, ``state_dict``/``load_state_dict``):

* ``fifo`` - ring buffer, the oldest item is overwritten;
* ``reservoir`` - Vitter's algorithm R: after ``n`` offers every offered item is in the buffer
  with probability ``capacity / n``;
* ``brs`` - balanced reservoir: reservoir admission, the victim is drawn from the most
  represented bucket (Buzzega et al. 2020);
* ``lars`` - loss-aware reservoir: reservoir admission, the victim is drawn with probability
  proportional to ``1 / (score + eps)`` so low-loss (easy) items go first; scores are refreshed
  with :meth:`update_scores` when items are replayed;
* ``brs_lars`` - both: LARS victim drawn inside the most represented bucket;
* ``class_balanced`` - class-balanced reservoir (CBRS, Chrysakis & Moens 2020): an item of a
  bucket that is not the largest always enters, evicting from the largest bucket; otherwise it
  is a reservoir step inside its own bucket. With the task as bucket this keeps an equal,
  uniformly random share of every task (what "simple ER" with a per-task random subset does).

Adding is O(1) amortised: O(#buckets) to find the largest bucket; a LARS draw is a vectorised
O(capacity) pass that only happens on admitted replacements (probability ``capacity / n``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

_EPS = 1e-8


class InsertionPolicy:
    """Reservoir-family policy; the flags select the victim rule (see the module docstring)."""

    name = "reservoir"
    balanced = False
    loss_aware = False

    def __init__(self, capacity: int, seed: int | None = 0) -> None:
        if not isinstance(capacity, int) or capacity <= 0:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        self.capacity = capacity
        self.rng = np.random.default_rng(seed)
        self.seen = 0
        self.buckets: list[Hashable] = []
        self.scores = np.full(capacity, np.nan)
        self._slots_by_bucket: dict[Hashable, list[int]] = {}
        self._position: list[int] = []  # index of each slot inside its bucket's slot list

    # -- bookkeeping ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.buckets)

    @property
    def is_full(self) -> bool:
        return len(self.buckets) >= self.capacity

    def bucket_counts(self) -> dict[Hashable, int]:
        """Number of stored items per bucket."""
        return {b: len(s) for b, s in self._slots_by_bucket.items() if s}

    def _link(self, slot: int, bucket: Hashable) -> None:
        slots = self._slots_by_bucket.setdefault(bucket, [])
        self._position[slot] = len(slots)
        slots.append(slot)

    def _unlink(self, slot: int) -> None:
        slots = self._slots_by_bucket[self.buckets[slot]]
        pos = self._position[slot]
        moved = slots[-1]
        slots[pos] = moved
        self._position[moved] = pos
        slots.pop()

    def _write(self, slot: int, bucket: Hashable, score: float | None) -> int:
        if slot == len(self.buckets):
            self.buckets.append(bucket)
            self._position.append(0)
        else:
            self._unlink(slot)
            self.buckets[slot] = bucket
        self._link(slot, bucket)
        self.scores[slot] = np.nan if score is None else float(score)
        return slot

    def _largest_bucket(self) -> Hashable:
        counts = self.bucket_counts()
        top = max(counts.values())
        largest = [b for b, c in counts.items() if c == top]
        return largest[int(self.rng.integers(len(largest)))] if len(largest) > 1 else largest[0]

    # -- policy --------------------------------------------------------------------------------
    def add(self, bucket: Hashable = None, score: float | None = None) -> int | None:
        """Offer one item; returns the slot to write it to, or ``None`` if it is discarded."""
        self.seen += 1
        if not self.is_full:
            return self._write(len(self.buckets), bucket, score)
        j = int(self.rng.integers(self.seen))
        if j >= self.capacity:
            return None
        victim = j if not (self.balanced or self.loss_aware) else self._pick_victim()
        return self._write(victim, bucket, score)

    def _pick_victim(self) -> int:
        if self.balanced:
            candidates = np.asarray(self._slots_by_bucket[self._largest_bucket()])
        else:
            candidates = np.arange(len(self.buckets))
        if not self.loss_aware:
            return int(candidates[self.rng.integers(len(candidates))])
        scores = self.scores[candidates]
        known = ~np.isnan(scores)
        fill = float(scores[known].mean()) if known.any() else 1.0
        scores = np.where(known, scores, fill)
        weights = 1.0 / (np.maximum(scores, 0.0) + _EPS)
        return int(self.rng.choice(candidates, p=weights / weights.sum()))

    def update_scores(self, indices: Sequence[int] | np.ndarray, scores: Sequence[float]) -> None:
        """Refresh the scores (losses) of stored items, e.g. after they were replayed."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        values = np.asarray(scores, dtype=np.float64).reshape(-1)
        if idx.shape != values.shape:
            raise ValueError(f"update_scores got {idx.size} indices but {values.size} scores")
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.buckets)):
            raise IndexError(f"update_scores indices must lie in [0, {len(self.buckets)})")
        self.scores[idx] = values

    # -- resume --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "capacity": self.capacity,
            "seen": self.seen,
            "buckets": list(self.buckets),
            "slots_by_bucket": [(b, list(slots)) for b, slots in self._slots_by_bucket.items()],
            "scores": self.scores.copy(),
            "rng": self.rng.bit_generator.state,
            **self._extra_state(),
        }

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name or state.get("capacity") != self.capacity:
            raise ValueError(
                f"state is for policy {state.get('name')!r} with capacity {state.get('capacity')}, "
                f"not {self.name!r} with capacity {self.capacity}"
            )
        self.seen = int(state["seen"])
        self.scores = np.asarray(state["scores"], dtype=np.float64).copy()
        self.rng.bit_generator.state = state["rng"]
        self.buckets = list(state["buckets"])
        self._position = [0] * len(self.buckets)
        self._slots_by_bucket = {b: list(slots) for b, slots in state["slots_by_bucket"]}
        for slots in self._slots_by_bucket.values():
            for pos, slot in enumerate(slots):
                self._position[slot] = pos

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(capacity={self.capacity}, size={len(self)}, seen={self.seen})"
        )


ReservoirPolicy = InsertionPolicy


class BalancedReservoirPolicy(InsertionPolicy):
    """BRS: reservoir admission, victim from the most represented bucket."""

    name = "brs"
    balanced = True


class LossAwareReservoirPolicy(InsertionPolicy):
    """LARS: reservoir admission, low-loss victims preferred."""

    name = "lars"
    loss_aware = True


class BalancedLossAwareReservoirPolicy(InsertionPolicy):
    """BRS + LARS: low-loss victim inside the most represented bucket."""

    name = "brs_lars"
    balanced = True
    loss_aware = True


class FIFOPolicy(InsertionPolicy):
    """Ring buffer: every item enters, the oldest is overwritten."""

    name = "fifo"

    def __init__(self, capacity: int, seed: int | None = 0) -> None:
        super().__init__(capacity, seed)
        self._next = 0

    def add(self, bucket: Hashable = None, score: float | None = None) -> int:
        self.seen += 1
        slot = self._next
        self._next = (self._next + 1) % self.capacity
        return self._write(slot, bucket, score)

    def _extra_state(self) -> dict[str, Any]:
        return {"next": self._next}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._next = int(state["next"])


class ClassBalancedReservoirPolicy(InsertionPolicy):
    """CBRS: equal share per bucket, uniform reservoir inside each bucket."""

    name = "class_balanced"

    def __init__(self, capacity: int, seed: int | None = 0) -> None:
        super().__init__(capacity, seed)
        self._seen_by_bucket: dict[Hashable, int] = {}

    def add(self, bucket: Hashable = None, score: float | None = None) -> int | None:
        self.seen += 1
        seen_here = self._seen_by_bucket.get(bucket, 0) + 1
        self._seen_by_bucket[bucket] = seen_here
        if not self.is_full:
            return self._write(len(self.buckets), bucket, score)
        counts = self.bucket_counts()
        own = counts.get(bucket, 0)
        if own < max(counts.values()):
            victims = self._slots_by_bucket[self._largest_bucket()]
            return self._write(victims[int(self.rng.integers(len(victims)))], bucket, score)
        j = int(self.rng.integers(seen_here))
        if j >= own:
            return None
        victims = self._slots_by_bucket[bucket]
        return self._write(victims[int(self.rng.integers(len(victims)))], bucket, score)

    def _extra_state(self) -> dict[str, Any]:
        return {"seen_by_bucket": dict(self._seen_by_bucket)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._seen_by_bucket = dict(state["seen_by_bucket"])


POLICIES: dict[str, type[InsertionPolicy]] = {
    cls.name: cls
    for cls in (
        FIFOPolicy,
        InsertionPolicy,
        BalancedReservoirPolicy,
        LossAwareReservoirPolicy,
        BalancedLossAwareReservoirPolicy,
        ClassBalancedReservoirPolicy,
    )
}


def make_insertion_policy(name: str, capacity: int, seed: int | None = 0) -> InsertionPolicy:
    """Build a policy by name: one of :data:`POLICIES`."""
    try:
        cls = POLICIES[name]
    except KeyError:
        raise ValueError(
            f"insertion policy {name!r} is unknown; allowed: {', '.join(sorted(POLICIES))}"
        ) from None
    return cls(capacity, seed)
