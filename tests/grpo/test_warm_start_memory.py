"""The warm start's loss projects onto the vocabulary only at the positions whose next token is
trained, never at every position (the (tokens x vocabulary) logits would dominate its memory),
and equals the loss over full logits."""

from __future__ import annotations

import torch

from tau2.continual_learning.grpo.warm_start import IGNORE_INDEX, masked_token_loss


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
