"""Attention for sampling on a CPU: grouped matmuls for short queries, SDPA for the rest.

PyTorch's CPU ``scaled_dot_product_attention`` in bfloat16 is an order of magnitude slower than
two plain matmuls for the one-query calls of decoding, and summed over a model's layers that
dominates every decode step (figures in docs/results.md). Queries of
at most :data:`SHORT_QUERY` positions therefore take a grouped-query matmul path (no
``repeat_kv`` copy: the query heads that share a key/value head are stacked as extra rows);
longer queries (prefill) keep transformers' SDPA, which is fast there.

:func:`sampling_attention` switches a model to this implementation for the duration of a
sampling call and back; it changes nothing for models that do not use SDPA or are not on a CPU.
Masks are SDPA's (boolean, or ``None`` when causal), so the fallback is exactly transformers'.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

NAME = "tau2_cpu_sampling"
SHORT_QUERY = 16
"""Queries up to this many positions use the grouped-matmul path."""


def short_query_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """An ``AttentionInterface`` function: ``query`` is ``[batch, heads, q, dim]``, ``key`` and
    ``value`` ``[batch, kv_heads, kv, dim]``; returns ``[batch, q, heads, dim]`` like every
    transformers attention function."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, q_len, dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    unusual = dropout or any(kwargs.get(k) is not None for k in ("sliding_window", "s_aux"))
    if q_len > SHORT_QUERY or unusual or heads % kv_heads or kwargs.get("softcap"):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    group = heads // kv_heads
    scale = dim**-0.5 if scaling is None else scaling
    # Query heads h = kv * group + g share key/value head kv (transformers' repeat_kv order).
    # Keys times queries, not queries times transposed keys: bmm then reads the cache's
    # strided keys in place instead of copying them every layer and step.
    keys = key.reshape(batch * kv_heads, kv_len, dim)
    queries = query.reshape(batch * kv_heads, group * q_len, dim)
    scores = torch.bmm(keys, queries.transpose(1, 2)).float() * scale
    scores = scores.view(batch, kv_heads, kv_len, group, q_len)  # softmax over kv_len (dim 2)
    if attention_mask is None and q_len > 1:
        # transformers' shorthand for SDPA's is_causal, which aligns queries to the first keys
        # (they are equal, or the keys after them are unwritten cache positions)
        attention_mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril()
    if attention_mask is not None:
        mask = attention_mask.transpose(-1, -2)[..., None, :]  # [batch|1, 1, kv, 1, q]
        if mask.dtype == torch.bool:  # a finite fill keeps fully masked rows NaN-free
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask
    probs = scores.softmax(dim=2).to(value.dtype).view(batch * kv_heads, kv_len, group * q_len)
    out = torch.bmm(probs.transpose(1, 2), value.reshape(batch * kv_heads, kv_len, dim))
    out = out.view(batch, heads, q_len, dim)
    return out.transpose(1, 2).contiguous(), None


@functools.cache
def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, short_query_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)


@contextlib.contextmanager
def sampling_attention(model: Any) -> Iterator[None]:
    """Use :func:`short_query_attention` inside the block if ``model`` is on a CPU with SDPA."""
    config = getattr(model, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    if previous != "sdpa" or model.device.type != "cpu":
        yield
        return
    _register()
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = previous
