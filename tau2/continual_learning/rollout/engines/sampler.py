"""Drawing tokens from log-probabilities by inverting each row's cumulative distribution.

``torch.multinomial`` on a CPU is slow for a large vocabulary (49,152 tokens here), of the order
of a whole decode step's attention. Inverting the cumulative distribution needs one uniform
number per row: the cumulative sum, in float64 so that even a token of probability 1e-12 keeps
its own interval, and a binary search, several times cheaper. Tokens of probability zero (cut by top-k/top-p) have an empty
interval and are never drawn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def draw(logprobs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token index per row of ``logprobs`` (``[rows, vocab]``, normalised or not; ``-inf``
    for excluded tokens), drawn with probability ``exp(logprobs)`` (renormalised)."""
    import torch

    if logprobs.dim() != 2:
        raise ValueError(f"draw expects [rows, vocab] log-probabilities, got {logprobs.shape}")
    cumulative = logprobs.exp().cumsum(dim=-1, dtype=torch.float64)
    total = cumulative[:, -1:]
    if not bool(torch.isfinite(total).all() and (total > 0).all()):
        raise ValueError("draw: a row of log-probabilities is NaN or has no finite entry")
    uniform = torch.rand(
        total.shape, dtype=torch.float64, device=logprobs.device, generator=generator
    )
    # strictly below the total, so the search cannot run past the last token with mass
    point = torch.minimum(uniform * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cumulative, point, right=True).squeeze(1)
