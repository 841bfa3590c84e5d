"""Shared-prefix training: the log-probs, entropies and gradients of the unshared computation."""

from __future__ import annotations

import pytest
import torch
from trl.trainer.utils import add_fused_lm_head

from tau2.continual_learning.grpo import shared_prefix
from tau2.continual_learning.tiny_model import build_tiny_model

TEMPERATURE = 0.7
TICKETS = [
    "Cancel my reservation ABC123, please.",
    "What is the status of order #W42? I ordered it",
]
REPLIES = ["Sure.", "Let me check that for you right away.", "I cannot help.", "Done!"]


def batch(tokenizer) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Two groups of three rows: prompts of different lengths left-padded to one width,
    different completions right-padded, rows of the groups interleaved (as after TRL's
    shuffle)."""
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": t}], add_generation_prompt=True, return_dict=True
        )["input_ids"]
        for t in TICKETS
    ]
    assert len(prompts[0]) != len(prompts[1])
    rows = [(prompts[i % 2], tokenizer.encode(REPLIES[i % 4])) for i in range(6)]
    prompt_width = max(len(p) for p, _ in rows)
    width = max(len(c) for _, c in rows)
    pad = tokenizer.pad_token_id
    ids, mask = [], []
    for prompt, completion in rows:
        left, right = prompt_width - len(prompt), width - len(completion)
        ids.append([pad] * left + prompt + completion + [pad] * right)
        mask.append([0] * left + [1] * (len(prompt) + len(completion)) + [0] * right)
    return torch.tensor(ids), torch.tensor(mask), width


def reference(model, input_ids, attention_mask, logits_to_keep):
    """Log-probs and entropies from the plain forward's full logits."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    logits = logits[:, -logits_to_keep - 1 : -1] / TEMPERATURE
    logps = logits.log_softmax(-1)
    chosen = logps.gather(-1, input_ids[:, -logits_to_keep:, None]).squeeze(-1)
    entropy = -(logps.exp() * logps).sum(-1)
    return chosen, entropy


def fused_model(tokenizer, lora: bool):
    model = build_tiny_model(tokenizer, num_key_value_heads=2, seed=3).train()
    add_fused_lm_head(model, temperature=TEMPERATURE, outputs=("log_probs", "entropy"))
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
        for name, param in model.named_parameters():  # LoRA's B starts at zero: move it
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.1)
    return model


def loss_and_grads(model, logps, entropy, mask):
    weights = torch.linspace(-1, 1, logps.numel()).view_as(logps)
    loss = ((logps * weights + 0.1 * entropy) * mask).sum()
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.autograd.grad(loss, params)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize(
    ("batch_size", "rows"),
    [(None, None), (4, None), (None, [0, 1]), (None, [1])],
    ids=["one-pass", "chunked", "distinct-prompts", "one-row"],
)
def test_shared_prefix_equals_the_unshared_computation(tokenizer, lora, batch_size, rows):
    """Two groups sharing their prompts, and rows whose prompts are all distinct (nothing to
    share: only the prompt positions' LM head is left out)."""
    model = fused_model(tokenizer, lora)
    input_ids, attention_mask, keep = batch(tokenizer)
    if rows is not None:
        input_ids, attention_mask = input_ids[rows], attention_mask[rows]
    mask = attention_mask[:, -keep:]
    backbone = shared_prefix.prefix_backbone(model)
    assert backbone is not None
    calls = []
    backbone.register_forward_hook(
        lambda m, a, kw, out: calls.append(kw["input_ids"].shape), with_kwargs=True
    )

    logps, entropy = shared_prefix.per_token_logps_and_entropies(
        model,
        backbone,
        input_ids,
        attention_mask,
        keep,
        compute_entropy=True,
        batch_size=batch_size,
    )
    prompt_width = input_ids.size(1) - keep
    # each distinct prompt encoded once, then each row's completion (after its last prompt token)
    assert calls[0] == (min(2, input_ids.size(0)), prompt_width - 1)
    assert all(shape[1] == keep + 1 for shape in calls[1:])
    expected_logps, expected_entropy = reference(model, input_ids, attention_mask, keep)
    torch.testing.assert_close(logps * mask, expected_logps * mask, rtol=0, atol=1e-5)
    torch.testing.assert_close(entropy * mask, expected_entropy * mask, rtol=2e-6, atol=1e-5)

    grads = loss_and_grads(model, logps, entropy, mask)
    expected = loss_and_grads(model, expected_logps, expected_entropy, mask)
    assert max(g.abs().max().item() for g in expected) > 1e-2  # a loss that moves the weights
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_a_completion_without_a_prompt_to_encode_takes_trls_path(tokenizer):
    model = fused_model(tokenizer, lora=False)
    input_ids, attention_mask, _ = batch(tokenizer)
    backbone = shared_prefix.prefix_backbone(model)
    width = input_ids.size(1)
    assert (
        shared_prefix.per_token_logps_and_entropies(
            model, backbone, input_ids, attention_mask, width - 1
        )
        is None
    )


def test_no_prefix_cache_under_activation_checkpointing(tokenizer):
    """transformers drops the cache of checkpointed layers: that model takes TRL's path."""
    model = fused_model(tokenizer, lora=False)
    assert shared_prefix.prefix_backbone(model) is not None
    model.gradient_checkpointing_enable()
    assert shared_prefix.prefix_backbone(model) is None


@pytest.mark.parametrize("micro_batch_size", [None, 2, 1])
def test_a_grpo_step_with_shared_prefixes_makes_the_unshared_update(
    tmp_path, tokenizer, tiny_run, monkeypatch, micro_batch_size
):
    """One real GRPO step through the TRL subclass (4 groups of 2), with and without
    ``shared_prefix``: the same weights after it. With the whole generation in one pass TRL's
    row shuffle scatters the groups; with one group's size per pass, whole groups are shuffled,
    so every pass encodes one prompt; with passes of one sequence (the default) nothing is
    shared and only the prompt positions' LM head is left out."""
    from tau2.continual_learning import GRPOConfig, GRPOTrainer
    from tau2.continual_learning.grpo.trainer import REWARD_FIELD

    class AlternatingRewards(GRPOTrainer):  # the random model earns no reward: no gradient
        def rollout(self, prompts, engine=None):
            out = super().rollout(prompts, engine)
            out[REWARD_FIELD] = [float(i % 2) for i in range(len(out[REWARD_FIELD]))]
            return out

    passes = []  # per shared pass: its rows and its distinct prompts
    original = shared_prefix.per_token_logps_and_entropies

    def recording(model, backbone, input_ids, attention_mask, logits_to_keep, **kwargs):
        prompts = {tuple(row) for row in input_ids[:, :-logits_to_keep].tolist()}
        passes.append((input_ids.size(0), len(prompts)))
        return original(model, backbone, input_ids, attention_mask, logits_to_keep, **kwargs)

    monkeypatch.setattr(shared_prefix, "per_token_logps_and_entropies", recording)

    def one_step(shared: bool) -> dict[str, torch.Tensor]:
        settings = {**tiny_run, "domains": ["telecom"], "max_steps_per_domain": 1}
        settings.update(eval_tasks_per_domain=1, bf16=False, learning_rate=1e-3, seed=0)
        settings.update(batch_size_per_gpu=4, replay_ratio=0.0)
        config = GRPOConfig(
            output_dir=str(tmp_path / str(shared)),
            micro_batch_size=micro_batch_size,
            shared_prefix=shared,
            **settings,
        )
        model = build_tiny_model(tokenizer, seed=1)
        trainer = AlternatingRewards(config, model=model, tokenizer=tokenizer)
        trainer.train()
        return trainer.model.state_dict()

    initial = build_tiny_model(tokenizer, seed=1).state_dict()
    unshared = one_step(False)
    assert passes == []
    shared = one_step(True)
    if micro_batch_size is None:
        assert [rows for rows, _ in passes] == [8]  # the step's 4 groups x 2 episodes
    elif micro_batch_size == 2:
        assert passes == [(2, 1)] * 4  # one group per pass: its prompt encoded once
    else:
        assert passes == [(1, 1)] * 8
    moved = 0.0
    for name, value in shared.items():
        # 1% of the step's update (lr 1e-3): Adam turns float rounding in near-zero gradients
        # into differences of a few 1e-6; a wrong prefix would differ by the whole update
        torch.testing.assert_close(value, unshared[name], rtol=0, atol=1e-5, msg=name)
        moved = max(moved, (value - initial[name]).abs().max().item())
    assert moved > 1e-4  # the step did update the weights (Adam moves them by about lr)


def test_shuffle_groups_keeps_each_group_whole_and_in_order():
    batch = {
        "ids": torch.arange(12).reshape(6, 2),
        "names": list("aabbcc"),
        "scalar": torch.tensor(3.0),
        "none": None,
    }
    torch.manual_seed(0)
    out = shared_prefix.shuffle_groups(batch, group_size=2)
    rows = out["ids"][:, 0].tolist()
    assert sorted(rows) == [0, 2, 4, 6, 8, 10]
    assert all(rows[i + 1] == rows[i] + 2 and rows[i] % 4 == 0 for i in (0, 2, 4))
    assert out["names"] == [batch["names"][r // 2] for r in rows]
    assert out["scalar"] is batch["scalar"] and out["none"] is None
    with pytest.raises(ValueError, match="not whole groups of 4"):
        shared_prefix.shuffle_groups(batch, group_size=4)
