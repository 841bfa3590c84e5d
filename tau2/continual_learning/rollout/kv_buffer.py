"""Key/value caches in preallocated buffers, written in place as tokens are encoded.

transformers' ``DynamicLayer`` grows by ``torch.cat``: every decode step re-allocates and copies
every layer's whole cache. On a CPU the fresh multi-megabyte allocations page-fault, and that,
not the copy itself, cost most of a decode step once the context reached a few hundred tokens
(measured: 16 rows x 1000 tokens, about 100 ms of a 184 ms step). A :class:`BufferedLayer` has
room for the tokens a call will add and writes them into it; past its capacity it falls back to
concatenation, so it is never wrong, only slower.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from transformers.cache_utils import DynamicCache, DynamicLayer

if TYPE_CHECKING:
    import torch


class BufferedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose ``keys``/``values`` are views of the first ``length`` positions
    of ``[batch, kv_heads, capacity, head_dim]`` buffers. Without buffers it allocates them at
    its first update, with room for ``capacity`` positions."""

    def __init__(
        self,
        capacity: int,
        key_buffer: torch.Tensor | None = None,
        value_buffer: torch.Tensor | None = None,
        length: int = 0,
    ) -> None:
        super().__init__()
        self.capacity = capacity
        self.key_buffer, self.value_buffer = key_buffer, value_buffer
        if key_buffer is not None:
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
            batch, heads, _, dim = key_states.shape
            self.key_buffer = key_states.new_empty((batch, heads, self.capacity, dim))
            self.value_buffer = value_states.new_empty((batch, heads, self.capacity, dim))
            self.dtype, self.device = key_states.dtype, key_states.device
            self.is_initialized = True
            self.length = 0
        assert self.key_buffer is not None and self.value_buffer is not None
        end = self.length + key_states.shape[-2]
        if end > self.key_buffer.shape[2]:  # out of room: grow (DynamicLayer would concatenate)
            self.key_buffer = _grown(self.key_buffer, self.length, end)
            self.value_buffer = _grown(self.value_buffer, self.length, end)
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self._set_length(end)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.key_buffer = self.key_buffer[indices]
            self.value_buffer = self.value_buffer[indices]
            self._set_length(self.length)

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        if self.is_initialized:
            self._set_length(self.keys.shape[2])

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self.key_buffer = self.key_buffer.repeat_interleave(repeats, dim=0)
            self.value_buffer = self.value_buffer.repeat_interleave(repeats, dim=0)
            self._set_length(self.length)

    def reset(self) -> None:
        super().reset()
        self.key_buffer = self.value_buffer = None


def _grown(buffer: torch.Tensor, length: int, needed: int) -> torch.Tensor:
    """A buffer with room for ``needed`` positions (at least doubling), holding the first
    ``length`` positions of ``buffer``."""
    shape = list(buffer.shape)
    shape[2] = max(needed, 2 * shape[2])
    grown = buffer.new_empty(shape)
    grown[:, :, :length] = buffer[:, :, :length]
    return grown


Past = tuple[list["torch.Tensor"], list["torch.Tensor"]]
"""Per-layer keys and values of one sequence, each ``[1, kv_heads, len, head_dim]``."""


def buffered_cache(
    pasts: list[Past | None], width: int, capacity: int, num_layers: int
) -> DynamicCache:
    """A cache over ``len(pasts)`` rows, each row's keys/values right-aligned to ``width``
    columns (zeros to their left, or all zeros for ``None``), with room for ``capacity``
    columns in all. With ``width == 0`` the buffers are allocated at the first update."""
    cache = DynamicCache()
    given = [p for p in pasts if p is not None]
    if width == 0 or not given:
        cache.layers = [BufferedLayer(capacity) for _ in range(num_layers)]
        return cache
    cache.layers = [
        BufferedLayer(
            capacity,
            _stacked([p[0][layer] if p else None for p in pasts], width, capacity),
            _stacked([p[1][layer] if p else None for p in pasts], width, capacity),
            width,
        )
        for layer in range(num_layers)
    ]
    return cache


def _stacked(tensors: list[torch.Tensor | None], width: int, capacity: int) -> torch.Tensor:
    first = next(t for t in tensors if t is not None)
    out = first.new_empty((len(tensors), first.shape[1], capacity, first.shape[3]))
    for row, tensor in enumerate(tensors):
        pad = width - (0 if tensor is None else tensor.shape[2])
        out[row, :, :pad] = 0
        if tensor is not None:
            out[row, :, pad:width] = tensor[0]
    return out
