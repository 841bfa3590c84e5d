"""Preallocated key/value layers behave like transformers' concatenating DynamicLayer."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

from tau2.continual_learning.rollout.engines.kv_buffer import BatchBuffers, BufferedLayer, Workspace


def _chunks(seed: int, sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(3, 2, n, 4, generator=generator), torch.randn(3, 2, n, 4, generator=generator))
        for n in sizes
    ]


def _layer(capacity: int, rows: int = 3) -> BufferedLayer:
    """A lazily allocated layer, as a policy call's packs get them."""
    buffers = BatchBuffers(rows=rows, width=0, room=capacity, num_layers=1)
    return buffers.pack_cache(slice(0, rows), 0, [[]] * rows, 0).layers[0]


def test_updates_in_place_match_concatenation_including_growth_past_capacity():
    buffered, plain = _layer(capacity=6), DynamicLayer()
    for keys, values in _chunks(0, [4, 1, 1, 3, 1]):  # 10 positions: grows past 6
        got = buffered.update(keys, values)
        plain.update(keys, values)
        assert torch.equal(buffered.keys, plain.keys) and torch.equal(buffered.values, plain.values)
        length = buffered.get_seq_length()
        assert length == plain.get_seq_length()
        # attention gets the whole buffers (unwritten positions zero), masks sized to them
        assert got[0].shape[2] == buffered.get_mask_sizes(0)[0] >= length
        assert not got[1][:, :, length:].any()
    assert buffered.key_buffer.shape[2] >= 10


def test_writes_go_into_the_buffer_without_reallocating_it():
    layer = _layer(capacity=8)
    layer.update(*_chunks(1, [3])[0])
    buffer = layer.key_buffer
    layer.update(*_chunks(2, [1])[0])
    assert layer.key_buffer is buffer and layer.keys.data_ptr() == buffer.data_ptr()


def test_row_selection_and_cropping_keep_the_cached_positions():
    buffered, plain = _layer(capacity=8), DynamicLayer()
    for keys, values in _chunks(3, [5]):
        buffered.update(keys, values)
        plain.update(keys, values)
    rows = torch.tensor([2, 0])
    buffered.batch_select_indices(rows)
    plain.batch_select_indices(rows)
    buffered.crop(-2)
    plain.crop(-2)
    assert torch.equal(buffered.keys, plain.keys) and buffered.get_seq_length() == 3
    keys, values = _chunks(4, [1])[0]
    buffered.update(keys[:2], values[:2])
    plain.update(keys[:2], values[:2])
    assert torch.equal(buffered.keys, plain.keys)


def test_dropping_rows_compacts_in_place_as_concatenation_would_select():
    buffered, plain = _layer(capacity=8, rows=4), DynamicLayer()
    generator = torch.Generator().manual_seed(5)
    keys, values = torch.randn(2, 4, 2, 5, 4, generator=generator)
    buffered.update(keys, values)
    plain.update(keys, values)
    block = buffered.key_buffer.data_ptr()
    for rows in ([0, 2, 3], [1, 2]):  # finished rows dropped, twice
        buffered.batch_select_indices(torch.tensor(rows))
        plain.batch_select_indices(torch.tensor(rows))
        assert buffered.key_buffer.data_ptr() == block  # moved within its buffer
        assert torch.equal(buffered.keys, plain.keys)
        assert torch.equal(buffered.values, plain.values)
    new_keys, new_values = torch.randn(2, 2, 2, 1, 4, generator=generator)
    buffered.update(new_keys, new_values)
    plain.update(new_keys, new_values)
    assert torch.equal(buffered.keys, plain.keys) and torch.equal(buffered.values, plain.values)


def test_packs_write_into_their_rows_of_the_batch_buffers_after_right_aligned_pasts():
    buffers = BatchBuffers(rows=3, width=6, room=1, num_layers=1, workspace=_garbage())
    short, first_piece = torch.ones(1, 2, 1, 4), torch.full((1, 2, 1, 4), 3.0)
    # pack of rows 0-1 from column 1: pasts right-aligned to column 1 + 2, suffixes to 6; row 1's
    # past comes in two pieces (a stored sequence's parent's part, then its own)
    pasts = [[([short], [short])], [([first_piece], [first_piece]), ([short], [short])]]
    first = buffers.pack_cache(slice(0, 2), 1, pasts, 2)
    new = torch.full((2, 2, 3, 4), 5.0)
    first.layers[0].update(new, new)
    assert first.layers[0].keys.shape == (2, 2, 5, 4)
    # a pack without pasts (row 2) starts at column 4
    buffers.pack_cache(slice(2, 3), 4, [[]], 0).layers[0].update(new[:1, :, :2], new[:1, :, :2])
    (layer,) = buffers.cache().layers
    assert layer.keys.shape == (3, 2, 6, 4) and buffers.keys[0].shape == (3, 2, 7, 4)
    # column values of each row: zeros wherever nothing was written, whatever was there before
    assert buffers.keys[0][0, 0, :, 0].tolist() == [0, 0, 1, 5, 5, 5, 0]
    assert buffers.keys[0][1, 0, :, 0].tolist() == [0, 3, 1, 5, 5, 5, 0]
    assert buffers.values[0][2, 0, :, 0].tolist() == [0, 0, 0, 0, 5, 5, 0]
    assert buffers.keys[0].isfinite().all() and buffers.values[0].isfinite().all()


def _garbage() -> Workspace:
    """A workspace whose memory holds NaN, as reused or fresh memory may."""
    workspace = Workspace()
    workspace.block = torch.full((1000,), float("nan"))
    return workspace


def test_a_lazily_allocated_layer_takes_the_shape_and_dtype_of_its_first_keys():
    buffers = BatchBuffers(rows=2, width=0, room=4, num_layers=2)
    cache = buffers.pack_cache(slice(0, 2), 0, [[], []], 0)
    keys = torch.ones(2, 3, 2, 5, dtype=torch.bfloat16)
    cache.layers[1].update(keys, keys)
    assert buffers.keys[1].shape == (2, 3, 4, 5) and buffers.keys[1].dtype == torch.bfloat16
    assert buffers.keys[0].shape == (2, 3, 4, 5)  # every layer's buffers come at once
    assert cache.layers[0].get_seq_length() == 0


def test_a_workspace_hands_its_memory_to_the_next_call():
    workspace = Workspace()
    like = torch.ones(1, 2, 1, 4)
    first = BatchBuffers(rows=2, width=2, room=1, num_layers=2, workspace=workspace)
    first.layer(0, like)[0].fill_(7.0)
    second = BatchBuffers(rows=1, width=2, room=1, num_layers=2, workspace=workspace)
    keys, values = second.layer(1, like)
    assert keys.data_ptr() != values.data_ptr()
    assert keys.untyped_storage().data_ptr() == first.keys[0].untyped_storage().data_ptr()
    # a pack clears what it will not write: here everything but its one-column suffix
    for layer in second.pack_cache(slice(0, 1), 1, [[]], 0).layers:
        layer.update(like, like)
    assert [t[0, 0, :, 0].tolist() for t in second.keys] == [[0, 1, 0], [0, 1, 0]]
    third = BatchBuffers(rows=1, width=2, room=1, num_layers=2, workspace=workspace)
    assert third.layer(0, like.bfloat16())[0].dtype == torch.bfloat16  # a new block
