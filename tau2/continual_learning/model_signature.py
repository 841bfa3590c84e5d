"""What the installed transformers' model classes take: the forward's parameters, the name of
its key/value cache argument, and whether the cache is plain per-layer keys/values. Shared by
the sampling engines (``rollout/engines/``) and the GRPO wing's training passes, so the GRPO
wing reads a model's signature without importing an engine."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any


def forward_parameters(model: Any) -> Mapping[str, inspect.Parameter]:
    """The parameters of the forward method of ``model``'s class (a PEFT model's base model's),
    for callers that pass a keyword only where the installed transformers takes it."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inspect.signature(type(base).forward).parameters


def cache_keyword(model: Any) -> str:
    """The name under which ``model``'s forward takes its key/value cache: ``cache`` where the
    installed transformers has renamed it (5.25 has; it warns on ``past_key_values`` and drops
    that name in 5.40), else ``past_key_values``."""
    return "cache" if "cache" in forward_parameters(model) else "past_key_values"


def supports_prefix_cache(model: Any) -> bool:
    """Whether ``model``'s cache is plain per-layer keys/values that can be cut and stacked
    (not sliding-window, linear-attention or hybrid layers)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        cache = DynamicCache(config=model.config)
    except Exception:  # an unusual config: stay on the stateless path
        return False
    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)
