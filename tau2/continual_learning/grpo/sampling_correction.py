"""The correction for a sampler's numerics (TRL's ``vllm_importance_sampling_*``), taken from
the loss's own forward pass.

With vLLM sampling, TRL re-scores every sampled token with the training model before the loss,
one extra forward pass over the whole generation batch, and weights each token's loss by the
ratio ``exp(log p_model - log p_sampler)``, truncated (``*_truncate``) or masked (``*_mask``)
per token or per sequence. When one generation feeds exactly one optimizer step
(``num_iterations == 1`` and the accumulation aligned with generation: TRL's own condition for
dropping its "old" log-probs), the model that re-scores is the model the loss then runs, on the
same tokens: the ratio can be computed from the loss's forward (detached), and the extra pass is
saved. Micro-batches the trainer skips for want of signal are then never scored at all.

TRL computes the ratio only inside its generation step, next to the extra pass, so the same
arithmetic is written here (:func:`importance_ratio`); its modes and bounds are TRL's settings.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def importance_ratio(
    logps: torch.Tensor,
    sampling_logps: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    clip_min: float | None,
    clip_max: float | None,
) -> torch.Tensor:
    """Per-token (``(B, T)``) or per-sequence (``(B, 1)``) ratio of the model's probability of
    each sampled token to the sampler's, bounded as ``mode`` says.

    Tokens outside ``mask`` and tokens the sampler gave no log-prob for (NaN) count as a zero
    log-difference. ``*_truncate`` clamps the ratio to ``[clip_min, clip_max]``; ``*_mask``
    zeroes ratios outside it (a missing bound is no bound)."""
    if mode not in MODES:
        raise ValueError(f"Unknown importance sampling mode {mode!r}: one of {MODES}")
    difference = torch.nan_to_num((logps - sampling_logps) * mask, nan=0.0)
    if mode.startswith("sequence"):
        difference = difference.sum(dim=-1, keepdim=True)
    ratio = torch.exp(difference)
    if mode.endswith("truncate"):
        return torch.clamp(ratio, min=clip_min, max=clip_max)
    low = -math.inf if clip_min is None else clip_min
    high = math.inf if clip_max is None else clip_max
    return ratio.masked_fill((ratio < low) | (ratio > high), 0.0)


class CorrectionStats:
    """What TRL logs about the correction, under TRL's names, over one optimizer step's
    micro-batches: the absolute log-prob gap between model and sampler on the masked tokens
    (mean, max) and the ratio's min, mean and max."""

    def __init__(self) -> None:
        self.gaps: list[torch.Tensor] = []
        self.ratios: list[torch.Tensor] = []

    def add(
        self,
        logps: torch.Tensor,
        sampling_logps: torch.Tensor,
        mask: torch.Tensor,
        ratio: torch.Tensor,
        mode: str,
    ) -> None:
        """One micro-batch's tokens (and its ratios, per token or per sequence as ``mode``)."""
        keep = mask.bool()
        gap = (logps - sampling_logps).abs()
        self.gaps.append(gap[keep & ~torch.isnan(gap)].flatten())
        self.ratios.append(ratio.flatten() if mode.startswith("sequence") else ratio[keep])

    def flush(self) -> dict[str, float]:
        """The step's figures (none if no micro-batch was added); starts the next step."""
        if not self.ratios:
            return {}
        gaps, ratios = torch.cat(self.gaps), torch.cat(self.ratios)
        self.gaps, self.ratios = [], []
        return {
            "sampling/sampling_logp_difference/mean": _reduce(gaps, torch.mean),
            "sampling/sampling_logp_difference/max": _reduce(gaps, torch.max),
            "sampling/importance_sampling_ratio/min": _reduce(ratios, torch.min),
            "sampling/importance_sampling_ratio/mean": _reduce(ratios, torch.mean),
            "sampling/importance_sampling_ratio/max": _reduce(ratios, torch.max),
        }


def _reduce(values: torch.Tensor, how: Callable[[torch.Tensor], torch.Tensor]) -> float:
    return float(how(values)) if values.numel() else 0.0
