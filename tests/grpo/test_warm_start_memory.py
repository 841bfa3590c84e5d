"""The warm start's loss projects onto the vocabulary only at the positions whose next token is
trained, never at every position (the (tokens x vocabulary) logits would dominate its memory),
and equals the loss over full logits; under activation checkpointing it keeps layer inputs only,
for the same update."""

from __future__ import annotations

import pytest
import torch

from tau2.continual_learning.grpo.warm_start import (
    IGNORE_INDEX,
    gold_demonstrations,
    masked_token_loss,
    supervised_steps,
)
from tau2.continual_learning.rollout import load_tasks
from tau2.continual_learning.tiny_model import build_tiny_model


def test_logits_only_where_a_trained_token_follows(tiny_model):
    torch.manual_seed(0)
    width, trained = 300, [200, 201, 202, 250, 251]
    input_ids = torch.randint(100, 1000, (1, width))
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[0, trained] = input_ids[0, trained]
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    projected = []
    hook = tiny_model.lm_head.register_forward_hook(
        lambda module, args, output: projected.append(output.shape[1])
    )
    try:
        loss, count = masked_token_loss(tiny_model, batch)
    finally:
        hook.remove()
    assert projected == [len(trained)] and count == len(trained)
    with torch.no_grad():
        logits = tiny_model(input_ids=input_ids).logits[0, :-1].float()
    full = torch.nn.functional.cross_entropy(
        logits, labels[0, 1:], ignore_index=IGNORE_INDEX, reduction="sum"
    )
    torch.testing.assert_close(loss.detach(), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_activation_checkpointing_recomputes_layers_for_the_same_update(
    tokenizer, lora, monkeypatch
):
    """Under ``activation_checkpointing`` each decoder layer runs its forward a second time
    inside the backward pass (only its input was kept), the weights after the steps equal those
    of the plain steps, and the model's own setting is back afterwards."""
    from peft import LoraConfig, get_peft_model
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    calls = []
    forward = LlamaDecoderLayer.forward

    def counted(self, *args, **kwargs):  # module hooks do not fire in the recomputation
        calls.append(1)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LlamaDecoderLayer, "forward", counted)

    tasks = load_tasks("telecom", "train", "skills")[:2]
    episodes = gold_demonstrations(tasks, tokenizer, max_context_tokens=4096).episodes
    settings = dict(pad_token_id=tokenizer.pad_token_id, epochs=1, learning_rate=1e-2)
    settings.update(batch_size=1, seed=0)

    def trained(checkpointing: bool) -> tuple[dict[str, torch.Tensor], int, float]:
        model = build_tiny_model(tokenizer)
        if lora:
            torch.manual_seed(0)  # LoRA's A is drawn at wrapping
            model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
        initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
        calls.clear()
        result = supervised_steps(
            model, episodes, **settings, activation_checkpointing=checkpointing
        )
        assert result.steps == len(episodes)
        assert not model.is_gradient_checkpointing
        after = {k: v.detach().clone() for k, v in model.state_dict().items()}
        moved = max((after[k] - initial[k]).abs().max().item() for k in after)
        return after, len(calls), moved

    plain, plain_calls, moved = trained(False)
    checkpointed, checkpointed_calls, _ = trained(True)
    layers = build_tiny_model(tokenizer).config.num_hidden_layers
    assert plain_calls == layers * len(episodes)
    assert checkpointed_calls == 2 * layers * len(episodes)
    assert moved > 1e-4  # the steps did move the weights
    for name, value in plain.items():
        torch.testing.assert_close(checkpointed[name], value, rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("checkpointing", [True, False])
def test_the_run_checkpoints_its_warm_start_as_configured(
    tmp_path, tokenizer, tiny_run, monkeypatch, checkpointing
):
    from tau2.continual_learning import GRPOConfig, GRPOTrainer
    from tau2.continual_learning.grpo import warm_start

    seen = []
    steps = warm_start.supervised_steps

    def recorded(*args, **kwargs):
        seen.append(kwargs["activation_checkpointing"])
        return steps(*args, **kwargs)

    monkeypatch.setattr(warm_start, "supervised_steps", recorded)
    settings = {**tiny_run, "domains": ["retail"], "max_steps_per_domain": 0}
    settings.update(warm_start_demos_per_domain=2, warm_start_guard_tasks=0)
    config = GRPOConfig(
        output_dir=str(tmp_path),
        warm_start_activation_checkpointing=checkpointing,
        **settings,
    )
    GRPOTrainer(config, model=build_tiny_model(tokenizer), tokenizer=tokenizer).train()
    assert seen == [checkpointing]
    assert GRPOConfig(output_dir=str(tmp_path)).warm_start_activation_checkpointing
