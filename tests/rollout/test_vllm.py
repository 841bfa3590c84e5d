"""The vLLM engine against the trained transformers model: same greedy continuations, the
sampling log-probs TRL re-scores, and weights that follow every change of the model (full
fine-tuning and LoRA). One engine serves the module; each test points it at its own model."""

from __future__ import annotations

import pytest
import torch
import vllm  # noqa: F401  (a dev dependency: the README's test install has its CPU build)

from tau2.continual_learning.model_loading import wrap_lora
from tau2.continual_learning.rollout import HFPolicy, SamplingParams, VLLMPolicy
from tau2.continual_learning.rollout.prompt import ChatFormat
from tau2.continual_learning.tiny_model import build_tiny_model

GREEDY = SamplingParams(max_new_tokens=12, temperature=0.0)


def vllm_shaped_model(tokenizer, seed=0):
    """A tiny random Llama whose head size (32) vLLM's CPU attention supports."""
    return build_tiny_model(tokenizer, hidden_size=64, num_heads=2, seed=seed)


@pytest.fixture(scope="module")
def engine(tokenizer):
    policy = VLLMPolicy.from_model(vllm_shaped_model(tokenizer), tokenizer, kv_cache_gb=0.125)
    yield policy
    policy.close()


@pytest.fixture
def follow(engine):
    """Point the shared engine at a model; the next batch loads its weights."""

    def point(model):
        engine.follow = model
        return engine

    return point


@pytest.fixture(scope="module")
def prompts(tokenizer):
    chat = ChatFormat.from_tokenizer(tokenizer)
    return [
        chat.prompt_ids("You are helpful.", [("user", "hello there, how are you")]),
        chat.prompt_ids("s", [("user", "hi")], "<tool_call>"),
        chat.prompt_ids("Answer briefly.", [("user", "name three colours " * 5)]),
    ]


def greedy_ids(policy, prompts):
    return [g.token_ids for g in policy.generate(prompts, GREEDY)]


def train_step(model, tokenizer, lr):
    """One fused-AdamW step (transformers' default optimizer) of next-token loss on a fixed
    text, with a learning rate large enough to change greedy outputs."""
    ids = torch.tensor([tokenizer.encode("The quick brown fox jumps over the lazy dog. " * 3)])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, fused=True)
    model.train()
    model(ids, labels=ids).loss.backward()
    optimizer.step()
    model.eval()


def test_greedy_continuations_and_their_logprobs_match_transformers(tokenizer, follow, prompts):
    model = vllm_shaped_model(tokenizer, seed=1)
    engine = follow(model)
    hf = HFPolicy(model, tokenizer, prefix_cache=False)
    ours, theirs = engine.generate(prompts, GREEDY), hf.generate(prompts, GREEDY)
    assert [g.token_ids for g in ours] == [g.token_ids for g in theirs]  # exact, in float32
    for a, b in zip(ours, theirs, strict=True):
        assert a.finish_reason == b.finish_reason
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)


def test_sampled_logprobs_are_what_the_trained_model_gives_the_tokens(tokenizer, follow, prompts):
    """What TRL's importance-sampling correction compares: the engine's log-prob of each
    sampled token (after temperature) and the trained model's re-scored one."""
    model = vllm_shaped_model(tokenizer, seed=2)
    engine = follow(model)
    sampling = SamplingParams(max_new_tokens=16, temperature=0.7)
    for prompt, generation in zip(prompts, engine.generate(prompts, sampling, seed=5), strict=True):
        ids = torch.tensor([prompt + generation.token_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt) - 1 : -1] / 0.7
        rescored = logits.log_softmax(-1).gather(1, torch.tensor(generation.token_ids)[:, None])
        assert torch.allclose(rescored.squeeze(1), torch.tensor(generation.logprobs), atol=1e-4)


def test_seeded_sampling_repeats(tokenizer, follow, prompts):
    engine = follow(vllm_shaped_model(tokenizer, seed=3))
    sampling = SamplingParams(max_new_tokens=10, temperature=1.0)
    first = [g.token_ids for g in engine.generate(prompts, sampling, seed=11)]
    assert first == [g.token_ids for g in engine.generate(prompts, sampling, seed=11)]
    assert first != [g.token_ids for g in engine.generate(prompts, sampling, seed=12)]


def test_rows_with_one_prompt_sample_different_continuations(tokenizer, follow, prompts):
    """A GRPO group's members share their prompt and the call's seed; each must still draw its
    own sample, or every group's rewards are equal and GRPO gets no signal."""
    engine = follow(vllm_shaped_model(tokenizer, seed=3))
    sampling = SamplingParams(max_new_tokens=10, temperature=1.0)
    group = [g.token_ids for g in engine.generate([prompts[0]] * 4, sampling, seed=11)]
    assert len({tuple(ids) for ids in group}) == 4
    assert group == [g.token_ids for g in engine.generate([prompts[0]] * 4, sampling, seed=11)]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_the_engine_samples_from_the_weights_after_an_optimizer_step(
    tokenizer, follow, prompts, lora
):
    model = vllm_shaped_model(tokenizer, seed=4)
    if lora:
        model = wrap_lora(model, r=8, alpha=16, dropout=0.0)
    engine = follow(model)
    hf = HFPolicy(model, tokenizer, prefix_cache=False)
    before = greedy_ids(engine, prompts)
    assert before == greedy_ids(hf, prompts)
    syncs = engine.syncs
    train_step(model, tokenizer, lr=0.5 if lora else 0.05)
    after = greedy_ids(hf, prompts)
    assert after != before  # the step really moved the outputs
    assert greedy_ids(engine, prompts) == after
    assert engine.syncs == syncs + 1
    greedy_ids(engine, prompts)
    assert engine.syncs == syncs + 1  # unchanged weights are not loaded again


def test_loaded_state_is_followed_too(tokenizer, follow, prompts):
    """A checkpoint load (``load_state_dict``) changes the weights without an optimizer."""
    model = vllm_shaped_model(tokenizer, seed=5)
    engine = follow(model)
    greedy_ids(engine, prompts)
    model.load_state_dict(vllm_shaped_model(tokenizer, seed=6).state_dict())
    assert greedy_ids(engine, prompts) == greedy_ids(
        HFPolicy(model, tokenizer, prefix_cache=False), prompts
    )


def test_an_empty_prompt_is_rejected_clearly(engine):
    with pytest.raises(ValueError, match="at least one token"):
        engine.generate([[1, 2], []], GREEDY)
