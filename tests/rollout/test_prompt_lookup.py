"""Prompt-lookup decoding: drafts, their acceptance rule, and HFPolicy with drafts on."""

from __future__ import annotations

import math

import pytest
import torch

from tau2.continual_learning.rollout import HFPolicy, SamplingParams
from tau2.continual_learning.rollout.engines.prompt_lookup import PromptLookup, accept
from tau2.continual_learning.rollout.prompt import ChatFormat


def test_a_draft_continues_the_latest_earlier_occurrence_of_the_longest_ngram():
    # "1 2" occurs twice: the latest occurrence (followed by 7 8) wins; "9 1 2" (3-gram)
    # occurs once earlier and wins over both
    assert PromptLookup([1, 2, 5, 6, 1, 2, 7, 8, 1, 2]).draft(2) == [7, 8]
    assert PromptLookup([9, 1, 2, 4, 1, 2, 7, 9, 1, 2]).draft(3) == [4, 1, 2]
    assert PromptLookup([1, 2, 3]).draft(4) == []  # nothing repeats
    assert PromptLookup([1, 2, 1]).draft(0) == []


def test_a_loop_is_drafted_as_far_as_asked_and_extend_grows_the_sequence():
    lookup = PromptLookup([5, 3, 3, 3])
    assert lookup.draft(5) == [3, 3, 3, 3, 3]
    lookup.extend([4, 5, 3])
    assert lookup.draft(3) == [3, 3, 4]  # "4 5 3" is new; "5 3" was seen at the start
    lookup.extend([6, 5])
    assert lookup.draft(2) == [3, 6]  # only "5" occurred before: latest at index 5


def test_greedy_acceptance_keeps_drafted_tokens_while_they_are_the_argmax():
    vocab = 6
    logits = torch.full((2, 4, vocab), -5.0)
    for position, best in enumerate([3, 1, 4, 2]):
        logits[0, position, best] = 5.0
        logits[1, position, best] = 5.0
    logprobs = logits.log_softmax(-1)
    tokens, token_logprobs = accept(logprobs, [[3, 1, 0], [0]], greedy=True)
    # row 0: 3 and 1 agree, 0 is rejected at position 2, where the argmax 4 is emitted
    assert tokens == [[3, 1, 4], [3]]
    assert token_logprobs[0] == pytest.approx(
        [logprobs[0, j, t].item() for j, t in enumerate([3, 1, 4])]
    )


def test_a_fully_accepted_draft_emits_one_more_token_and_no_draft_emits_one():
    logprobs = torch.tensor([[[0.0, -50.0], [-50.0, 0.0]], [[-50.0, 0.0], [0.0, 0.0]]])
    tokens, _ = accept(logprobs, [[0], []], greedy=True)
    assert tokens == [[0, 1], [1]]


def test_speculative_sampling_emits_tokens_with_the_policys_distribution():
    """Whatever the draft, the first emitted token must be distributed as p (accept d with
    probability p(d), else draw from p without d)."""
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    rows = 20000
    logprobs = p.log().expand(rows, 2, 4).clone()
    torch.manual_seed(0)
    for draft in (0, 3):  # a likely and an unlikely drafted token
        tokens, token_logprobs = accept(logprobs, [[draft]] * rows, greedy=False)
        first = torch.tensor([t[0] for t in tokens])
        frequencies = torch.bincount(first, minlength=4).double() / rows
        bound = 4 * math.sqrt(0.25 / rows)  # four standard errors at worst
        assert torch.allclose(frequencies, p.double(), atol=bound), (draft, frequencies)
        # recorded log-probs are those of p, for accepted and drawn tokens alike
        assert all(
            lp[0] == pytest.approx(p[t[0]].log().item())
            for t, lp in zip(tokens[:50], token_logprobs[:50], strict=True)
        )


def _prompts(tokenizer):
    chat = ChatFormat.from_tokenizer(tokenizer)
    return [
        chat.prompt_ids("s", [("user", "book flight ABC123 for Ana; book flight ABC123 for Ana")]),
        chat.prompt_ids("s", [("user", "hi")]),
    ]


def _passes(model, run):
    shapes = []
    hook = model.register_forward_hook(
        lambda module, args, kwargs, out: shapes.append(tuple(kwargs["input_ids"].shape)),
        with_kwargs=True,
    )
    try:
        return run(), shapes
    finally:
        hook.remove()


def test_greedy_decoding_with_drafts_equals_plain_decoding_in_fewer_passes(tokenizer, tiny_model):
    sampling = SamplingParams(max_new_tokens=24, temperature=0)
    prompts = _prompts(tokenizer)
    plain, plain_passes = _passes(
        tiny_model,
        lambda: HFPolicy(tiny_model, tokenizer, lookup_tokens=0).generate(prompts, sampling),
    )
    drafted, drafted_passes = _passes(
        tiny_model,
        lambda: HFPolicy(tiny_model, tokenizer, lookup_tokens=4).generate(prompts, sampling),
    )
    assert [g.token_ids for g in drafted] == [g.token_ids for g in plain]
    assert [g.finish_reason for g in drafted] == [g.finish_reason for g in plain]
    assert torch.allclose(
        torch.tensor([g.logprobs for g in drafted]),
        torch.tensor([g.logprobs for g in plain]),
        atol=1e-4,
    )
    assert all(shape[1] == 1 for shape in plain_passes[1:])
    assert len(drafted_passes) < len(plain_passes)  # drafts were accepted
    assert max(shape[1] for shape in drafted_passes[1:]) > 1


def test_drafted_turns_leave_a_prefix_cache_that_continues_them_exactly(tokenizer, tiny_model):
    """A next turn reuses what a drafted turn stored (accepted drafts included, rejected ones
    not): it must decode as a fresh policy would."""
    sampling = SamplingParams(max_new_tokens=16, temperature=0)
    prompts = _prompts(tokenizer)
    policy = HFPolicy(tiny_model, tokenizer, lookup_tokens=4)
    first = policy.generate(prompts, sampling)
    follow = [
        p + g.token_ids + [tokenizer.eos_token_id] for p, g in zip(prompts, first, strict=True)
    ]
    reused = policy.generate(follow, sampling)
    assert policy.cache.stats.reused_tokens > 0
    fresh = HFPolicy(tiny_model, tokenizer, lookup_tokens=0).generate(follow, sampling)
    assert [g.token_ids for g in reused] == [g.token_ids for g in fresh]


def test_sampled_logprobs_with_drafts_are_those_of_the_model(tokenizer, tiny_model):
    policy = HFPolicy(tiny_model, tokenizer, lookup_tokens=6)
    prompts = _prompts(tokenizer)
    generations = policy.generate(
        prompts, SamplingParams(max_new_tokens=20, temperature=0.3), seed=1
    )
    for prompt, generation in zip(prompts, generations, strict=True):
        ids = torch.tensor([prompt + generation.token_ids])
        with torch.no_grad():
            logits = tiny_model(ids).logits[0, len(prompt) - 1 : -1] / 0.3
        expected = logits.log_softmax(-1).gather(1, torch.tensor(generation.token_ids)[:, None])
        assert torch.allclose(expected.squeeze(1), torch.tensor(generation.logprobs), atol=1e-4)


def test_invalid_lookup_settings_are_refused(tokenizer, tiny_model):
    with pytest.raises(ValueError, match="lookup_tokens"):
        HFPolicy(tiny_model, tokenizer, lookup_tokens=-1)
    with pytest.raises(ValueError, match="max_ngram"):
        PromptLookup([1], max_ngram=0)
    with pytest.raises(ValueError, match="max_length"):
        PromptLookup([1], max_length=0)
