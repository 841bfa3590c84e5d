"""Shared-prefix training: each distinct prompt of a batch is encoded once, not once per row.

The members of a GRPO group share their prompt (system prompt, tools, ticket); TRL's per-token
log-probs run every row's whole sequence through the model. Here the batch's rows are grouped by
their prompt columns (padding included), and

1. the backbone encodes each distinct prompt, but its last token, once, keeping its keys/values;
2. those keys/values are gathered to the rows that share the prompt (the gather's backward sums
   the rows' gradients into the single prefix computation);
3. each row's last prompt token and completion run through the model over that cache, with the
   row's whole attention mask, so position ids and masking are those of the unshared pass, and
   TRL's fused LM head (its temperature, fp32 cast and kernel) scores the completion positions.

Log-probs, entropies and gradients equal TRL's unshared computation up to float rounding. The
prompt positions also skip the LM head, which TRL's fused head scores at every position off
Triton devices (its CPU path: ``trl/trainer/utils.py``, ``_fused_forward``). That saving holds
for a pass whose rows all have distinct prompts too (the default passes of one sequence), so
such a pass takes this path as well, with nothing shared.

Sharing needs a group's rows in the same micro-batch. TRL shuffles a generation's rows before
cutting it into micro-batches (``shuffle_sequence_dict`` in ``_prepare_inputs``), which scatters
the groups; :func:`shuffle_groups` shuffles whole groups instead, so with ``micro_batch_size`` a
multiple of the group size every pass holds whole groups. The update does not change: TRL's
losses normalise by the whole generation, not by the pass (``docs/grpo.md``, micro-batches).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from tau2.continual_learning.model_signature import cache_keyword, supports_prefix_cache

logger = logging.getLogger(__name__)


def shuffle_groups(batch: dict[str, Any], group_size: int) -> dict[str, Any]:
    """``batch`` (TRL's generation batch: tensors and lists with one row per episode, groups of
    ``group_size`` consecutive rows) with its groups in random order (torch's generator, as TRL's
    row shuffle) and each group's rows kept together and in order. Scalars and ``None`` pass."""
    rows = len(next(v for v in batch.values() if v is not None and not _scalar(v)))
    if rows % group_size:
        raise ValueError(f"{rows} rows are not whole groups of {group_size}")
    order = torch.randperm(rows // group_size)
    permutation = (order[:, None] * group_size + torch.arange(group_size)).flatten()

    def permute(value: Any) -> Any:
        if value is None or _scalar(value):
            return value
        if isinstance(value, torch.Tensor):
            return value[permutation]
        return [value[i] for i in permutation.tolist()]

    return {key: permute(value) for key, value in batch.items()}


def _scalar(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim == 0


def prefix_backbone(model: Any) -> Any | None:
    """The decoder stack that encodes the shared prefixes of ``model`` (unwrapped from DDP; a
    PEFT model's base model's, whose layers carry the adapters), or ``None`` where a cache
    cannot stand in for the prefix: key/value caches other than plain per-layer ones, and
    activation checkpointing in training (transformers then drops the cache)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(base, "base_model", None)
    if backbone is None or backbone is base or not supports_prefix_cache(base):
        return None
    if base.training and getattr(base, "is_gradient_checkpointing", False):
        return None
    return backbone


def per_token_logps_and_entropies(
    model: Any,
    backbone: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int,
    *,
    compute_entropy: bool = False,
    batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """What TRL's ``_get_per_token_logps_and_entropies`` returns for a text-only batch (the
    log-probs and, with ``compute_entropy``, entropies of the last ``logits_to_keep`` columns),
    with each distinct prompt encoded once by ``backbone`` (:func:`prefix_backbone`).

    ``model`` is the model TRL calls (patched with TRL's fused LM head, possibly wrapped by
    PEFT or DDP); ``batch_size`` chunks the completion passes as TRL chunks its rows. Returns
    ``None`` (TRL's pass then runs) when the prompt part is shorter than two columns."""
    prompt_width = input_ids.size(1) - logits_to_keep
    if prompt_width < 2:
        return None
    past = prompt_width - 1
    prompts, rows = torch.unique(
        torch.cat([input_ids[:, : past + 1], attention_mask[:, : past + 1].to(input_ids.dtype)], 1),
        dim=0,
        return_inverse=True,
    )
    logger.debug("%d rows share %d distinct prompts", len(rows), len(prompts))
    prefix = backbone(
        input_ids=prompts[:, :past],
        attention_mask=prompts[:, past + 1 : 2 * past + 1],
        use_cache=True,
    ).past_key_values
    layers = [(layer.keys, layer.values) for layer in prefix.layers]
    logps, entropies = [], []
    step = batch_size or input_ids.size(0)
    for start in range(0, input_ids.size(0), step):
        chunk = slice(start, start + step)
        cache = type(prefix)(
            ddp_cache_data=[(k[rows[chunk]], v[rows[chunk]]) for k, v in layers],
            config=backbone.config,
        )
        tail = input_ids[chunk, past:]
        labels = tail.masked_fill(attention_mask[chunk, past:] == 0, -100)
        labels[:, 0] = -100  # the last prompt token is an input here, not a target
        outputs = model(
            input_ids=tail,
            attention_mask=attention_mask[chunk],
            labels=labels,
            fused_lm_head=True,
            **{cache_keyword(backbone): cache},
        )
        logps.append(outputs.log_probs[:, -logits_to_keep:])
        if compute_entropy:
            entropies.append(outputs.entropy[:, -logits_to_keep:])
    return torch.cat(logps), torch.cat(entropies) if compute_entropy else None
