"""Batched prefill: pack layout, packing and shared prefixes; HFPolicy with several packs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tau2.continual_learning.rollout import HFPolicy, SamplingParams
from tau2.continual_learning.rollout.engines.batched_prefill import (
    PrefillLayout,
    packs,
    shared_prefixes,
)
from tau2.continual_learning.rollout.prompt import ChatFormat

rows = st.lists(
    st.lists(st.integers(1, 9), min_size=1, max_size=12).flatmap(
        lambda s: st.tuples(st.just(s), st.integers(0, len(s) - 1))
    ),
    min_size=1,
    max_size=6,
)


@given(rows)
def test_layout_puts_each_row_in_its_masked_columns_in_order(rows):
    layout = PrefillLayout([s for s, _ in rows], [r for _, r in rows])
    mask, ids, positions = layout.attention_mask(), layout.suffix_ids(0), layout.position_ids()
    past = layout.past_width
    for row, (sequence, reused) in enumerate(rows):
        columns = layout.columns(row)
        assert len(columns) == len(sequence) and columns == sorted(columns)
        assert [c for c in range(layout.width) if mask[row][c]] == columns
        assert columns[-1] == layout.width - 1  # every row ends in the last column
        new = [c - past for c in columns if c >= past]
        assert [ids[row][c] for c in new] == sequence[reused:]
        assert [positions[row][c] for c in new] == list(range(reused, len(sequence)))


def test_layout_rejects_rows_without_a_token_to_encode():
    with pytest.raises(ValueError, match="at least one token"):
        PrefillLayout([[1, 2]], [2])


@given(st.lists(st.integers(1, 300), min_size=1, max_size=30), st.integers(1, 600))
def test_packs_cover_every_row_once_within_the_budget(lengths, budget):
    grouped = packs(lengths, budget)
    assert sorted(i for pack in grouped for i in pack) == list(range(len(lengths)))
    for pack in grouped:
        assert len(pack) == 1 or len(pack) * max(lengths[i] for i in pack) <= budget


def test_shared_prefixes_find_group_prompts_and_skip_small_savings():
    group = [list(range(100))] * 4
    other = [[7] * 50]
    (prefix,) = shared_prefixes(group + other, [0] * 5)
    assert prefix == list(range(99))  # all but the last token, which each row must encode
    assert shared_prefixes(group + other, [99, 99, 99, 99, 0]) == []  # the cache has it
    twins = [[1] * 30 + [2], [1] * 30 + [3]]
    assert shared_prefixes(twins, [0, 0]) == []  # saves 30 < 64 tokens
    assert shared_prefixes(twins, [0, 0], min_saving=30) == [[1] * 30]


def test_prefill_in_several_packs_equals_stateless_generation(tokenizer, sharp_model):
    chat = ChatFormat.from_tokenizer(tokenizer)
    prompts = [
        chat.prompt_ids("You are helpful.", [("user", "order " * k)]) for k in (1, 9, 2, 30, 4)
    ]
    prompts.append(prompts[3])  # a repeat: shares its whole prompt
    greedy = SamplingParams(max_new_tokens=6, temperature=0)
    policy = HFPolicy(sharp_model, tokenizer, prefill_pack_tokens=48)
    stateless = HFPolicy(sharp_model, tokenizer, prefix_cache=False)
    # reused key/value memory may hold anything: what a call does not write must not count
    garbage = torch.full((2_000_000,), float("nan"))
    policy._workspace.block = garbage
    for turn in range(2):
        got, expected = policy.generate(prompts, greedy), stateless.generate(prompts, greedy)
        assert [g.token_ids for g in got] == [g.token_ids for g in expected]
        for a, b in zip(got, expected, strict=True):
            assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)
        env = chat.env_turn_ids("ok" * (turn + 1), "<tool_call>", close_turn=True)
        prompts = [p + g.token_ids + env for p, g in zip(prompts, got, strict=True)]
    assert policy._workspace.block is garbage  # the calls did use that memory
    with pytest.raises(ValueError, match="prefill_pack_tokens"):
        HFPolicy(sharp_model, tokenizer, prefill_pack_tokens=0)
