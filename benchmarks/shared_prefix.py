"""Shared-prefix training: forward+backward seconds of GRPO log-probs, shared vs TRL's path.

For ``--groups`` task groups of ``--members`` episodes (prompt of about ``--prompt_tokens``,
completions of about ``--completion_tokens``, lengths varied so prompts are left-padded and
completions right-padded), it times the forward and backward of the per-token log-probs and
entropies of each micro-batch, the way TRL's GRPO loss computes them (``trl``: the fused-head
forward of every whole row) and with :mod:`~tau2.continual_learning.grpo.shared_prefix`
(``shared``), for two micro-batch shapes: a whole group per pass (``rows_per_pass`` =
``members``: the group's prompt is encoded once) and one row per pass (the trainer's default
``micro_batch_size``: nothing to share, the prompt positions still skip the LM head). Model:
the embedded SmolLM2-135M with a LoRA adapter as the trainer wraps it, bf16 autocast where
supported. One JSON line per configuration, then ``{"speedup": ...}`` per micro-batch shape.

    python benchmarks/shared_prefix.py
    python benchmarks/shared_prefix.py --groups 1 --prompt_tokens 64 --completion_tokens 32
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from trl.trainer.utils import add_fused_lm_head

from tau2.continual_learning import load_model_and_tokenizer
from tau2.continual_learning.grpo import shared_prefix
from tau2.continual_learning.grpo.config import GRPOConfig, bf16_supported
from tau2.continual_learning.model_loading import wrap_lora


def micro_batches(args, vocab: int) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """Each group's rows as one micro-batch (left-padded prompt, right-padded completions)."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for g in range(args.groups):
        prompt_len = args.prompt_tokens - 16 * g
        lengths = [args.completion_tokens - 24 * m for m in range(args.members)]
        width, pad = max(lengths), args.prompt_tokens - prompt_len
        prompt = torch.randint(vocab, (prompt_len,), generator=generator)
        ids = torch.zeros(args.members, args.prompt_tokens + width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for m, length in enumerate(lengths):
            ids[m, pad : args.prompt_tokens] = prompt
            ids[m, args.prompt_tokens : args.prompt_tokens + length] = torch.randint(
                vocab, (length,), generator=generator
            )
            mask[m, pad : args.prompt_tokens + length] = 1
        batches.append((ids, mask, width))
    return batches


def trl_logps(model, input_ids, attention_mask, logits_to_keep):
    """TRL's ``_get_per_token_logps_and_entropies`` call for a text batch."""
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, :-logits_to_keep] = -100
    out = model(
        input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True
    )
    return out.log_probs[:, -logits_to_keep:], out.entropy[:, -logits_to_keep:]


def shared_logps(model, input_ids, attention_mask, logits_to_keep):
    backbone = shared_prefix.prefix_backbone(model)
    return shared_prefix.per_token_logps_and_entropies(
        model, backbone, input_ids, attention_mask, logits_to_keep, compute_entropy=True
    )


def timed(model, method, batches, rows_per_pass: int, autocast) -> float:
    """Seconds of forward+backward over every micro-batch (the loss: a masked sum)."""
    start = time.perf_counter()
    for ids, mask, keep in batches:
        for row in range(0, ids.size(0), rows_per_pass):
            rows = slice(row, row + rows_per_pass)
            with autocast():
                logps, entropy = method(model, ids[rows], mask[rows], keep)
            completion = mask[rows, -keep:]
            ((logps - 0.01 * entropy) * completion).sum().backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--prompt_tokens", type=int, default=700)
    parser.add_argument("--completion_tokens", type=int, default=400)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args()
    bf16 = bf16_supported() if args.bf16 is None else args.bf16
    torch.manual_seed(0)
    model, tokenizer = load_model_and_tokenizer(dtype=torch.float32, device="cpu")
    config = GRPOConfig(output_dir="/tmp/shared_prefix_benchmark")
    add_fused_lm_head(model, temperature=config.temperature, outputs=("log_probs", "entropy"))
    model = wrap_lora(model, config.lora_r, config.lora_alpha, 0.0, config.lora_target_modules)
    model.train()
    batches = micro_batches(args, len(tokenizer))

    def autocast():
        return torch.autocast("cpu", torch.bfloat16) if bf16 else contextlib.nullcontext()

    shape = {
        "groups": args.groups,
        "members": args.members,
        "prompt_tokens": args.prompt_tokens,
        "completion_tokens": args.completion_tokens,
        "bf16": bf16,
        "threads": torch.get_num_threads(),
    }
    timed(model, shared_logps, batches[:1], args.members, autocast)  # warm-up
    for rows_per_pass in (args.members, 1):
        seconds = {}
        for name, method in (("trl", trl_logps), ("shared", shared_logps)):
            seconds[name] = timed(model, method, batches, rows_per_pass, autocast)
            line = {"config": name, "rows_per_pass": rows_per_pass, **shape}
            print(json.dumps({**line, "fwd_bwd_s": round(seconds[name], 2)}), flush=True)
        speedup = seconds["trl"] / seconds["shared"]
        print(json.dumps({"rows_per_pass": rows_per_pass, "speedup": round(speedup, 2)}))


if __name__ == "__main__":
    main()
