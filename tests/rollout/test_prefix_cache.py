"""The prefix KV cache: the store's rules, and HFPolicy with the cache against without it."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tau2.continual_learning.model_signature import cache_keyword
from tau2.continual_learning.rollout import EpisodeRunner, HFPolicy, SamplingParams, load_tasks
from tau2.continual_learning.rollout.engines.prefix_cache import (
    CachedSequence,
    PrefixCache,
    common_prefix_length,
)
from tau2.continual_learning.rollout.prompt import ChatFormat
from tau2.continual_learning.tiny_model import build_tiny_model

GREEDY = SamplingParams(max_new_tokens=8, temperature=0)


def _entry(tokens: list[int]) -> CachedSequence:
    empty = torch.zeros((1, 1, len(tokens), 1))
    return CachedSequence(list(tokens), [empty], [empty])


@given(st.lists(st.integers(0, 3), max_size=40), st.lists(st.integers(0, 3), max_size=40))
def test_common_prefix_length_matches_a_plain_scan(a, b):
    expected = 0
    while expected < min(len(a), len(b)) and a[expected] == b[expected]:
        expected += 1
    assert common_prefix_length(a, b) == expected


def test_store_finds_the_longest_shared_prefix_and_drops_extended_entries():
    cache = PrefixCache(max_tokens=100)
    cache.add(_entry([1, 2, 3]))
    cache.add(_entry([1, 2, 9, 9]))
    entry, length = cache.lookup([1, 2, 9, 5])
    assert entry.tokens == [1, 2, 9, 9] and length == 3
    cache.add(_entry([1, 2, 3, 4, 5]))  # extends [1, 2, 3]: that entry is now redundant
    assert sorted(e.tokens for e in cache.entries) == [[1, 2, 3, 4, 5], [1, 2, 9, 9]]
    assert cache.lookup([7]) == (None, 0)


def test_store_evicts_least_recently_used_within_its_token_budget():
    cache = PrefixCache(max_tokens=10)
    cache.add(_entry([1] * 4))
    cache.add(_entry([2] * 4))
    cache.lookup([1, 1])  # [1]*4 is now the most recently used
    cache.add(_entry([3] * 4))
    assert sorted(e.tokens[0] for e in cache.entries) == [1, 3]
    assert cache.num_tokens <= 10
    cache.add(_entry([4] * 11))  # longer than the whole budget: not kept
    assert sorted(e.tokens[0] for e in cache.entries) == [1, 3]
    with pytest.raises(ValueError, match="max_tokens"):
        PrefixCache(max_tokens=0)


def _prompts(tokenizer, lengths=(1, 3, 6)):
    chat = ChatFormat.from_tokenizer(tokenizer)
    return [
        chat.prompt_ids("You are helpful.", [("user", "where is my order? " * k)]) for k in lengths
    ]


def _next_turn(tokenizer, prompts, generations):
    chat = ChatFormat.from_tokenizer(tokenizer)
    env = chat.env_turn_ids("Error: unknown tool", "<tool_call>", close_turn=True)
    return [p + g.token_ids + env for p, g in zip(prompts, generations, strict=True)], len(env)


def test_cached_turns_equal_stateless_turns_and_encode_only_new_tokens(tokenizer, sharp_model):
    # without drafts, a turn's last sampled token is never encoded (with them it may be: an
    # accepted drafted token is; tests/rollout/test_prompt_lookup.py covers that cache)
    cached = HFPolicy(sharp_model, tokenizer, lookup_tokens=0)
    stateless = HFPolicy(sharp_model, tokenizer, prefix_cache=False)
    prompts = _prompts(tokenizer)
    for _turn in range(3):
        with_cache = cached.generate(prompts, GREEDY)
        without = stateless.generate(prompts, GREEDY)
        assert [g.token_ids for g in with_cache] == [g.token_ids for g in without]
        for a, b in zip(with_cache, without, strict=True):
            assert a.finish_reason == b.finish_reason
            assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)
        before = cached.cache.stats.prefill_tokens
        prompts, env_length = _next_turn(tokenizer, prompts, with_cache)
    # the last call encoded each prompt's last sampled token and the env turn, nothing more
    cached.generate(prompts, GREEDY)
    assert cached.cache.stats.prefill_tokens - before == len(prompts) * (env_length + 1)


def test_a_grpo_group_encodes_its_shared_prompt_once(tokenizer, tiny_model):
    policy = HFPolicy(tiny_model, tokenizer)
    (prompt,) = _prompts(tokenizer, lengths=(4,))
    generations = policy.generate([prompt] * 4, SamplingParams(max_new_tokens=6), seed=1)
    # the first episode encodes the prompt, the other three only its last position
    assert policy.cache.stats.prefill_tokens == len(prompt) + 3
    assert len({tuple(g.token_ids) for g in generations}) > 1  # still four independent samples


def _held_tokens(cache: PrefixCache) -> int:
    """Tokens whose keys/values the store keeps alive: every entry's own part, and its parents'
    (which may have left the store's list), each counted once."""
    nodes, stack = {}, list(cache.entries)
    while stack:
        entry = stack.pop()
        if id(entry) not in nodes:
            nodes[id(entry)] = entry
            stack += [entry.parent] if entry.parent is not None else []
    return sum(entry.keys[0].shape[2] for entry in nodes.values())


def test_stored_episodes_hold_their_shared_prompt_once(tokenizer, sharp_model):
    """The four episodes of a group, over two turns: each stored sequence keeps only what
    follows the prompt it shares (and then its previous turn), not a copy of them."""
    policy = HFPolicy(sharp_model, tokenizer, lookup_tokens=0)
    (prompt,) = _prompts(tokenizer, lengths=(4,))
    prompts = [prompt] * 4
    sampling = SamplingParams(max_new_tokens=6)
    generations = policy.generate(prompts, sampling, seed=1)
    prompts, _ = _next_turn(tokenizer, prompts, generations)
    policy.generate(prompts, sampling, seed=2)
    entries = policy.cache.entries
    assert len(entries) == 4 and all(e.parent is not None for e in entries)
    distinct = {tuple(e.tokens) for e in entries}
    assert len(distinct) == 4  # four different episodes
    copies = sum(len(e.tokens) for e in entries)  # what full copies would hold
    shared_turns = sum(len(e.tokens) - len(prompt) for e in entries)
    assert _held_tokens(policy.cache) == len(prompt) + shared_turns < copies


def test_weight_updates_invalidate_the_cache(tokenizer):
    model = build_tiny_model(tokenizer, seed=3)
    policy = HFPolicy(model, tokenizer)
    prompts = _prompts(tokenizer, lengths=(2,))
    first = policy.generate(prompts, GREEDY)
    follow_up, _ = _next_turn(tokenizer, prompts, first)
    with torch.no_grad():  # an optimizer-like in-place update of the attention keys
        model.model.layers[0].self_attn.k_proj.weight.mul_(-3.0)
    (after,) = policy.generate(follow_up, GREEDY)
    (expected,) = HFPolicy(model, tokenizer, prefix_cache=False).generate(follow_up, GREEDY)
    assert policy.cache.stats.invalidations == 1
    assert after.token_ids == expected.token_ids
    assert torch.allclose(torch.tensor(after.logprobs), torch.tensor(expected.logprobs), atol=1e-4)


def test_autocast_changes_invalidate_the_cache(tokenizer, tiny_model):
    policy = HFPolicy(tiny_model, tokenizer)
    prompts = _prompts(tokenizer, lengths=(2,))
    policy.generate(prompts, GREEDY)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        policy.generate(prompts, GREEDY)
    assert policy.cache.stats.invalidations == 1


def test_under_autocast_keys_and_values_are_held_in_bf16_for_the_same_samples(
    tokenizer, sharp_model, monkeypatch
):
    """Under bf16 autocast the decode buffers and the stored sequences hold keys/values in
    bfloat16 (half the memory; attention casts them to it at every read otherwise) and sample
    exactly what float32 storage does: every matmul that reads them runs in bfloat16 anyway."""
    from tau2.continual_learning.rollout.engines import kv_buffer

    def episodes():
        policy = HFPolicy(sharp_model, tokenizer)  # drafts on: their passes read the buffers
        prompts = _prompts(tokenizer) * 2
        sampling = SamplingParams(max_new_tokens=8, temperature=0.8)
        turns = []
        with torch.autocast("cpu", dtype=torch.bfloat16):
            for turn in range(2):
                turns.append(policy.generate(prompts, sampling, seed=turn))
                prompts, _ = _next_turn(tokenizer, prompts, turns[-1])
        stored = {e.keys[0].dtype for e in policy.cache.entries}
        stored |= {e.values[0].dtype for e in policy.cache.entries}
        return turns, stored

    turns, stored = episodes()
    assert stored == {torch.bfloat16}
    monkeypatch.setattr(kv_buffer, "autocast_dtype", lambda device_type: None)
    reference, stored = episodes()
    assert stored == {torch.float32}
    assert turns == reference


def test_models_with_sliding_window_caches_fall_back_to_stateless_generation(tokenizer):
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        sliding_window=8,
        eos_token_id=tokenizer.eos_token_id,
    )
    policy = HFPolicy(MistralForCausalLM(config).eval(), tokenizer)
    assert policy.cache is None
    (generation,) = policy.generate(_prompts(tokenizer, lengths=(1,)), GREEDY)
    assert len(generation.token_ids) == len(generation.logprobs) > 0


def test_the_runner_frees_the_cache_when_a_run_ends(tokenizer, turn_ending_model):
    policy = HFPolicy(turn_ending_model, tokenizer)
    tasks = load_tasks("retail", "train", task_source="skills")[:2]
    with EpisodeRunner(policy, max_turns=3, max_new_tokens_per_turn=8, scoring_workers=0) as run:
        episodes = run.run(tasks, num_generations=2)
    assert len(episodes) == 4
    assert policy.cache.stats.reused_tokens > 0 and policy.cache.num_tokens == 0


def test_the_cache_goes_under_the_name_the_installed_transformers_takes(tokenizer, tiny_model):
    class Renamed:  # transformers >= 5.25: forward(..., cache=...)
        def forward(self, input_ids=None, cache=None, use_cache=None): ...

    class Older:  # transformers < 5.25: forward(..., past_key_values=...)
        def forward(self, input_ids=None, past_key_values=None, use_cache=None): ...

    assert cache_keyword(Renamed()) == "cache"
    assert cache_keyword(Older()) == "past_key_values"
    # and the installed version warns about nothing on the cached path
    policy = HFPolicy(tiny_model, tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        policy.generate(_prompts(tokenizer), GREEDY)


def test_the_prefix_cache_is_on_by_default_on_a_cpu_only(tokenizer):
    on_cpu = build_tiny_model(tokenizer)
    assert HFPolicy(on_cpu, tokenizer).cache is not None
    assert HFPolicy(on_cpu, tokenizer, prefix_cache=False).cache is None
    # an accelerator's model (here one on the meta device: not a CPU) goes stateless unless asked
    elsewhere = build_tiny_model(tokenizer).to("meta")
    assert HFPolicy(elsewhere, tokenizer).cache is None
    assert HFPolicy(elsewhere, tokenizer, prefix_cache=True).cache is not None
