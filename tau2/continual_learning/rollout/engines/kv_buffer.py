"""Key/value caches in preallocated buffers, written in place as tokens are encoded.

transformers' ``DynamicLayer`` grows by ``torch.cat``: every decode step re-allocates and copies
every layer's whole cache. On a CPU the fresh multi-megabyte allocations page-fault, and that,
not the copy itself, costs most of a decode step once the context reaches a few hundred tokens.
A :class:`BufferedLayer` has
room for the tokens a call will add and writes them into it; past its capacity it grows by
doubling, so it is never wrong, only slower.

:class:`BatchBuffers` holds one such buffer per layer for every row of a policy call: each
prefill pack writes into its rows' slice of it (a view), and decoding then continues on the
whole, so no row's keys/values are copied between prefill and decoding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from transformers.cache_utils import DynamicCache, DynamicLayer

from tau2.continual_learning.rollout.engines.weights import autocast_dtype

if TYPE_CHECKING:
    import torch

Past = tuple[list["torch.Tensor"], list["torch.Tensor"]]
"""Per-layer keys and values of one sequence, each ``[1, kv_heads, len, head_dim]``."""

Allocator = Callable[["torch.Tensor"], tuple["torch.Tensor", "torch.Tensor"]]
"""Given a layer's first new keys, the key and value buffers it should write into."""


class BufferedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose ``keys``/``values`` are views of the first ``length`` positions
    of ``[batch, kv_heads, capacity, head_dim]`` buffers: given ones (:meth:`attach`), or the
    ones ``allocate`` returns at the first update."""

    is_compileable = True
    """Read by transformers' mask code: never drop the mask of a one-token query (the buffers
    hold unwritten positions that only the mask hides), as for its static caches."""

    def __init__(self, capacity: int, allocate: Allocator | None = None) -> None:
        """``allocate`` may be left out only for layers that are attached before use."""
        super().__init__()
        self.capacity = capacity
        self.allocate = allocate
        self.length = 0
        self.key_buffer: torch.Tensor | None = None
        self.value_buffer: torch.Tensor | None = None

    def attach(self, key_buffer: torch.Tensor, value_buffer: torch.Tensor, length: int) -> None:
        """Use these buffers, whose first ``length`` positions already hold keys/values."""
        self.key_buffer, self.value_buffer = key_buffer, value_buffer
        self.dtype, self.device = key_buffer.dtype, key_buffer.device
        self.is_initialized = True
        self._set_length(length)

    def _set_length(self, length: int) -> None:
        assert self.key_buffer is not None and self.value_buffer is not None
        self.length = length
        self.keys = self.key_buffer[:, :, :length]
        self.values = self.value_buffer[:, :, :length]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            assert self.allocate is not None, "a BufferedLayer without buffers or allocator"
            self.attach(*self.allocate(key_states), 0)
        assert self.key_buffer is not None and self.value_buffer is not None
        end = self.length + key_states.shape[-2]
        if end > self.key_buffer.shape[2]:  # out of room: grow (DynamicLayer would concatenate)
            self.capacity = _room_for(self.key_buffer.shape[2], end)
            self.key_buffer = _grown(self.key_buffer, self.length, self.capacity)
            self.value_buffer = _grown(self.value_buffer, self.length, self.capacity)
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self._set_length(end)
        # All of the buffers, unwritten positions too: they lie after every query, so the causal
        # mask (sized by get_mask_sizes) hides them, and attention reads the buffers in place.
        return self.key_buffer, self.value_buffer

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """Masks cover the whole buffer (as with transformers' static caches)."""
        capacity = self.key_buffer.shape[2] if self.key_buffer is not None else self.capacity
        return _room_for(capacity, self.get_seq_length() + query_length), 0

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the rows ``indices``. Rows kept in their order (finished rows dropped while
        decoding) move up in place, written positions only; any other selection copies."""
        if not self.is_initialized:
            return
        assert self.key_buffer is not None and self.value_buffer is not None
        rows = indices.tolist()
        if rows != sorted(set(rows)):
            self.attach(self.key_buffer[indices], self.value_buffer[indices], self.length)
            return
        # ascending, so a row is always moved before another row moves over it
        for new, old in enumerate(rows):
            if new != old:
                self.key_buffer[new, :, : self.length] = self.key_buffer[old, :, : self.length]
                self.value_buffer[new, :, : self.length] = self.value_buffer[old, :, : self.length]
        self.attach(self.key_buffer[: len(rows)], self.value_buffer[: len(rows)], self.length)

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        if self.is_initialized:
            self._set_length(self.keys.shape[2])

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            assert self.key_buffer is not None and self.value_buffer is not None
            self.attach(
                self.key_buffer.repeat_interleave(repeats, dim=0),
                self.value_buffer.repeat_interleave(repeats, dim=0),
                self.length,
            )

    def reset(self) -> None:
        super().reset()
        self.length = 0
        self.key_buffer = self.value_buffer = None


def _room_for(capacity: int, needed: int) -> int:
    """Positions a buffer of ``capacity`` has once ``needed`` are written (at least doubling
    when it has to grow)."""
    return capacity if needed <= capacity else max(needed, 2 * capacity)


def _grown(buffer: torch.Tensor, length: int, capacity: int) -> torch.Tensor:
    """A zeroed buffer of ``capacity`` positions holding the first ``length`` of ``buffer``."""
    shape = list(buffer.shape)
    shape[2] = capacity
    grown = buffer.new_zeros(shape)
    grown[:, :, :length] = buffer[:, :, :length]
    return grown


class Workspace:
    """Memory that successive :class:`BatchBuffers` reuse. Freshly allocated multi-megabyte
    tensors page-fault on first touch on a CPU (writing keys into a fresh block is several times
    slower than into one written before), so one block is kept and handed out again,
    and when a call needs more (contexts grow turn by turn) it grows to twice the need, so
    that the next turns fit (pages never touched cost no memory). Only one
    :class:`BatchBuffers` may use it at a time: a new one overwrites the last one's memory."""

    def __init__(self) -> None:
        self.block: torch.Tensor | None = None

    def take(
        self, numel: int, like: torch.Tensor, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """An uninitialised 1-D tensor of ``numel`` elements on ``like``'s device, of ``dtype``
        (default ``like``'s; it may hold anything, NaN included)."""
        dtype = dtype or like.dtype
        block = self.block
        fits = block is not None and block.numel() >= numel
        if not fits or (block.dtype, block.device) != (dtype, like.device):
            self.block = None  # free the old block first
            self.block = block = like.new_empty((2 * numel,), dtype=dtype)
        return block[:numel]

    def clear(self) -> None:
        self.block = None


class BatchBuffers:
    """Key/value buffers ``[rows, kv_heads, width + room, head_dim]`` per layer for all rows of
    a call: packs write columns before ``width`` (every pack ends there), decoding writes from
    ``width`` on. All layers' buffers are one block (from ``workspace`` if given) allocated
    when their shape and dtype are first known, uninitialised: each pack zeroes the columns
    of its rows that it does not write (left of each row's keys, and the decoding room), since
    attention reads whole buffers and masked positions must not hold NaN, which a zero
    attention weight would not cancel. Zeroing only those (not the whole block) matters: a
    whole-block fill costs memory bandwidth on every call."""

    def __init__(
        self, rows: int, width: int, room: int, num_layers: int, workspace: Workspace | None = None
    ) -> None:
        self.rows, self.width, self.capacity = rows, width, width + room
        self.num_layers = num_layers
        self.workspace = workspace or Workspace()
        self.block: torch.Tensor | None = None
        """``[layers, 2 (keys, values), rows, kv_heads, capacity, head_dim]``"""

    @property
    def keys(self) -> list[torch.Tensor]:
        """Each layer's key buffer (empty before the first pack)."""
        return [] if self.block is None else list(self.block[:, 0])

    @property
    def values(self) -> list[torch.Tensor]:
        """Each layer's value buffer (empty before the first pack)."""
        return [] if self.block is None else list(self.block[:, 1])

    def layer(self, index: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``index``'s buffers, shaped with ``like``'s heads and head size, in the dtype
        attention reads them in: autocast's where it is on (transformers' rotary embedding
        hands over float32 keys under bf16 autocast, and attention's matmuls would cast the
        whole cache to bf16 again at every layer of every step: a fifth of a CPU decode step,
        and twice the memory), else ``like``'s."""
        if self.block is None:
            shape = (self.num_layers, 2, self.rows, like.shape[1], self.capacity, like.shape[3])
            dtype = autocast_dtype(like.device.type) if like.is_floating_point() else None
            self.block = self.workspace.take(math.prod(shape), like, dtype).view(shape)
        return self.block[index, 0], self.block[index, 1]

    def pack_cache(
        self, rows: slice, start: int, pasts: list[list[Past]], past_width: int
    ) -> DynamicCache:
        """A cache writing rows ``rows`` from column ``start`` on, each row's ``pasts`` (its
        reused keys/values in consecutive pieces; none: nothing reused) already right-aligned
        to ``start + past_width``; the pack's suffixes are to fill the columns from there to
        ``width``."""
        lengths = [sum(keys[0].shape[2] for keys, _ in pieces) for pieces in pasts]
        unwritten = [start + past_width - length for length in lengths]  # before each row's keys
        cleared = False

        def views(index: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            nonlocal cleared
            keys, values = self.layer(index, like)
            if not cleared:  # before the pack's first write
                assert self.block is not None
                for row, end in zip(range(rows.start, rows.stop), unwritten, strict=True):
                    self.block[:, :, row, :, :end].zero_()
                self.block[:, :, rows, :, self.width :].zero_()
                cleared = True
            return keys[rows, :, start:], values[rows, :, start:]

        given = [(row, pieces) for row, pieces in enumerate(pasts) if pieces]
        cache = DynamicCache()
        cache.layers = []
        for index in range(self.num_layers):
            layer = BufferedLayer(self.capacity - start, lambda k, i=index: views(i, k))
            if past_width and given:
                keys, values = views(index, given[0][1][0][0][index])
                for row, pieces in given:
                    column = past_width - lengths[row]
                    for past_keys, past_values in pieces:
                        length = past_keys[index].shape[2]
                        keys[row, :, column : column + length] = past_keys[index][0]
                        values[row, :, column : column + length] = past_values[index][0]
                        column += length
                layer.attach(keys, values, past_width)
            cache.layers.append(layer)
        return cache

    def cache(self) -> DynamicCache:
        """A cache over all rows holding their first ``width`` columns (after the packs)."""
        assert self.block is not None, "no pack has been encoded"
        cache = DynamicCache()
        cache.layers = []
        for keys, values in zip(self.keys, self.values, strict=True):
            layer = BufferedLayer(self.capacity)
            layer.attach(keys, values, self.width)
            cache.layers.append(layer)
        return cache
