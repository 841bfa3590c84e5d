"""The Pond: a bounded ring buffer of transitions on the training device.

A small pond is fed by one agent and learnt from by it; attached to a lake, it pours its new
transitions into the lake in chunks, before the ring could overwrite them, so every
transition reaches the lake. A big pond is filled uniformly from the lake for consolidation.
Ponds keep the next observation as its own tensor (they are small, and the lake's frame
sharing would not survive uniform filling anyway).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

from tau2.continual_learning.tiered.lake import Field, Lake, check_batch, next_key

logger = logging.getLogger(__name__)


def default_device() -> torch.device:
    """The training device: the GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Pond:
    """Ring buffer of ``capacity`` transitions with the lake's fields, on ``device``.

    With ``lake`` given, every ``chunk_size`` (default ``capacity // 4``) new transitions are
    poured into it; ``pour()`` sends the rest, e.g. before a consolidation.
    """

    def __init__(
        self,
        capacity: int,
        fields: Mapping[str, Field],
        *,
        frame_key: str = "obs",
        device: torch.device | str | None = None,
        lake: Lake | None = None,
        chunk_size: int | None = None,
    ) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        chunk_size = max(1, capacity // 4) if chunk_size is None else chunk_size
        if not 0 < chunk_size <= capacity:
            raise ValueError(f"chunk_size must be in [1, {capacity}], got {chunk_size}")
        if lake is not None and (dict(lake.fields) != dict(fields) or lake.frame_key != frame_key):
            raise ValueError("the pond's fields and frame_key must be the lake's")
        self.capacity = capacity
        self.fields = dict(fields)
        self.frame_key = frame_key
        self.device = torch.device(device) if device is not None else default_device()
        self.lake = lake
        self.chunk_size = chunk_size
        specs = {**self.fields, next_key(frame_key): self.fields[frame_key]}
        self.data = {
            k: torch.zeros((capacity, *f.shape), dtype=f.dtype, device=self.device)
            for k, f in specs.items()
        }
        self._pos = 0
        self._size = 0
        self._unpoured = 0
        self.added = 0
        self.poured = 0

    def __len__(self) -> int:
        return self._size

    @property
    def unpoured(self) -> int:
        """Newest transitions not yet in the lake."""
        return self._unpoured

    def _write(self, batch: Mapping[str, torch.Tensor]) -> None:
        n = next(iter(batch.values())).shape[0]
        if n > self.capacity:  # only the newest rows survive a ring this small
            batch = {k: v[n - self.capacity :] for k, v in batch.items()}
            n = self.capacity
        rows = (self._pos + torch.arange(n, device=self.device)) % self.capacity
        for key, column in self.data.items():
            column[rows] = batch[key].to(self.device)
        self._pos = (self._pos + n) % self.capacity
        self._size = min(self.capacity, self._size + n)

    def add(self, batch: Mapping[str, torch.Tensor]) -> None:
        """Append consecutive transitions (a batch with the lake's keys), pouring as needed."""
        n = check_batch(batch, self.fields, self.frame_key)
        start = 0
        while start < n:
            stop = n if self.lake is None else min(n, start + self.chunk_size - self._unpoured)
            self._write({k: v[start:stop] for k, v in batch.items()})
            self.added += stop - start
            if self.lake is not None:
                self._unpoured += stop - start
                if self._unpoured >= self.chunk_size:
                    self.pour()
            start = stop

    def pour(self) -> int:
        """Send the unpoured transitions to the lake, oldest first; return how many."""
        if self.lake is None:
            raise ValueError("this pond has no lake to pour into")
        n = self._unpoured
        if n == 0:
            return 0
        rows = (self._pos - n + torch.arange(n, device=self.device)) % self.capacity
        self.lake.extend({k: v[rows] for k, v in self.data.items()})
        self._unpoured = 0
        self.poured += n
        return n

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """``batch_size`` stored transitions drawn uniformly, with replacement."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty pond")
        rows = torch.randint(0, self._size, (batch_size,), generator=generator).to(self.device)
        return {k: v[rows] for k, v in self.data.items()}

    def fill_from(
        self,
        lake: Lake,
        n: int | None = None,
        generator: torch.Generator | None = None,
        read_batch: int = 4096,
    ) -> int:
        """Replace the contents with ``n`` (default: capacity) uniform draws from ``lake``.

        Unpoured transitions are poured first, so filling loses nothing; the drawn ones count
        as poured (they came from the lake). Returns how many were drawn.
        """
        if self._unpoured and self.lake is not None:
            self.pour()
        n = self.capacity if n is None else min(n, self.capacity)
        self._pos = self._size = self._unpoured = 0
        done = 0
        while done < n:
            self._write(lake.sample(min(read_batch, n - done), generator))
            done = self._size
        logger.debug("filled a pond of %d from %r", done, lake)
        return done

    def state_dict(self) -> dict:
        """Stored transitions (on CPU) and counters, for checkpoints."""
        return {
            "data": {k: v[: self._size].cpu() for k, v in self.data.items()},
            "pos": self._pos,
            "size": self._size,
            "unpoured": self._unpoured,
            "added": self.added,
            "poured": self.poured,
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore what ``state_dict`` saved."""
        size = state["size"]
        for key, column in self.data.items():
            column[:size] = state["data"][key].to(self.device)
        self._pos, self._size = state["pos"], size
        self._unpoured, self.added, self.poured = state["unpoured"], state["added"], state["poured"]

    def __repr__(self) -> str:
        return f"Pond({self._size}/{self.capacity} on {self.device}, {self._unpoured} unpoured)"
