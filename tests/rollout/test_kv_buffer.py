"""Preallocated key/value layers behave like transformers' concatenating DynamicLayer."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

from tau2.continual_learning.rollout.kv_buffer import BufferedLayer, buffered_cache


def _chunks(seed: int, sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(3, 2, n, 4, generator=generator), torch.randn(3, 2, n, 4, generator=generator))
        for n in sizes
    ]


def test_updates_in_place_match_concatenation_including_growth_past_capacity():
    buffered, plain = BufferedLayer(capacity=6), DynamicLayer()
    for keys, values in _chunks(0, [4, 1, 1, 3, 1]):  # 10 positions: grows past 6
        got = buffered.update(keys, values)
        expected = plain.update(keys, values)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
        assert buffered.get_seq_length() == plain.get_seq_length()
    assert buffered.key_buffer.shape[2] >= 10


def test_writes_go_into_the_buffer_without_reallocating_it():
    layer = BufferedLayer(capacity=8)
    layer.update(*_chunks(1, [3])[0])
    buffer = layer.key_buffer
    layer.update(*_chunks(2, [1])[0])
    assert layer.key_buffer is buffer and layer.keys.data_ptr() == buffer.data_ptr()


def test_row_selection_and_cropping_keep_the_cached_positions():
    buffered, plain = BufferedLayer(capacity=8), DynamicLayer()
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
    got = buffered.update(keys[:2], values[:2])
    assert torch.equal(got[0], plain.update(keys[:2], values[:2])[0])


def test_buffered_cache_right_aligns_rows_and_zero_fills_the_rest():
    short, long = torch.ones(1, 2, 2, 4), torch.full((1, 2, 3, 4), 2.0)
    cache = buffered_cache([([short], [short]), None, ([long], [long])], 3, 5, num_layers=1)
    (layer,) = cache.layers
    assert layer.keys.shape == (3, 2, 3, 4) and cache.get_seq_length() == 3
    assert torch.equal(layer.keys[0, :, 0], torch.zeros(2, 4))
    assert torch.equal(layer.keys[0, :, 1:], short[0])
    assert torch.equal(layer.keys[1], torch.zeros(2, 3, 4))
    assert torch.equal(layer.values[2], long[0])
    empty = buffered_cache([None, None], 0, 4, num_layers=2)
    assert len(empty.layers) == 2 and empty.get_seq_length() == 0
