"""Episodes as one batch of token rows for a forward pass outside TRL (the warm start's
supervised steps, CLEAR's behaviour cloning), and the precision such a pass runs in (the pad
id: :func:`tau2.continual_learning.rollout.prompt.pad_token_id`).

A row is ``prompt_ids + completion_ids``, right-padded; what the model wrote is where the
episode's ``env_mask`` is 1 (tool responses, user turns and template tokens are 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["TokenBatch", "bf16_autocast", "bf16_supported", "right_padded"]


def bf16_supported() -> bool:
    """bfloat16 autocast pays off: a CUDA GPU with bf16, or a CPU with native bf16 matmuls
    (AVX512-BF16/AMX)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def bf16_autocast(model: Any, enabled: bool) -> torch.autocast:
    """bfloat16 autocast on ``model``'s device when ``enabled`` (``config.bf16``)."""
    device_type = next(model.parameters()).device.type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=enabled)


@dataclass
class TokenBatch:
    """Right-padded rows of episodes, each ``(rows, width)``."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    model_written: torch.Tensor
    """True where the model wrote the token (``env_mask == 1`` within the completion)."""
    logprobs: torch.Tensor
    """The sampling log-prob recorded for each completion token (0 elsewhere)."""


def right_padded(episodes: Sequence[Any], pad_id: int, *, logprobs: bool = False) -> TokenBatch:
    """``episodes`` (anything with ``prompt_ids``, ``completion_ids``, ``env_mask`` and, with
    ``logprobs=True``, ``logprobs``) as one right-padded batch."""
    rows = [list(e.prompt_ids) + list(e.completion_ids) for e in episodes]
    shape = (len(rows), max(len(r) for r in rows))
    batch = TokenBatch(
        input_ids=torch.full(shape, pad_id, dtype=torch.long),
        attention_mask=torch.zeros(shape, dtype=torch.long),
        model_written=torch.zeros(shape, dtype=torch.bool),
        logprobs=torch.zeros(shape, dtype=torch.float32),
    )
    for i, (episode, row) in enumerate(zip(episodes, rows, strict=True)):
        start, end = len(episode.prompt_ids), len(row)
        batch.input_ids[i, :end] = torch.tensor(row, dtype=torch.long)
        batch.attention_mask[i, :end] = 1
        batch.model_written[i, start:end] = torch.tensor(list(episode.env_mask), dtype=torch.bool)
        if logprobs:
            batch.logprobs[i, start:end] = torch.tensor(episode.logprobs, dtype=torch.float32)
    return batch
