"""What the vLLM engine may take beside the model being trained: its longest sequence
(``vllm_max_model_len``) and its share of the GPU's memory (``vllm_gpu_memory_utilization``),
resolved from the model, the run's context limit and the GPU's free memory, and refused
(:class:`~tau2.continual_learning.grpo.config.ConfigError`) before the engine is built when they
cannot fit. vLLM's own default share (0.9 of the GPU) leaves nothing for training in the same
process: vLLM refuses to start when less than its share is free."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from tau2.continual_learning.grpo.config import ConfigError, GRPOConfig
from tau2.continual_learning.sampling_defaults import head_size

GIB = 1 << 30
ENGINE_MARGIN_GIB = 2.0
"""The engine's memory beyond its weights and KV cache: activations of its profiling pass,
CUDA graphs, the allocator's slack."""
TRAINING_BYTES_PER_PARAMETER = 12
"""What training adds per trainable parameter once it runs: a float32 gradient and AdamW's two
moments."""


@dataclass(frozen=True)
class VLLMBudget:
    """The vLLM engine's limits for one run."""

    max_model_len: int
    gpu_memory_utilization: float | None
    """``None`` on a CPU (there ``vllm_kv_cache_gb`` alone sizes the engine)."""


def vllm_budget(
    config: GRPOConfig, model: Any, context_limit: int, window: int | None
) -> VLLMBudget:
    """The engine's limits for ``model`` (a transformers or PEFT model) in a run whose episodes
    reach ``context_limit`` tokens, in a model of ``window`` positions."""
    max_len = config.vllm_max_model_len or context_limit
    if max_len < context_limit or (window is not None and max_len > window):
        raise ConfigError(
            "vllm_max_model_len",
            config.vllm_max_model_len,
            f"None or from the run's context limit ({context_limit:,} tokens: episodes grow to "
            f"it) to the model's window ({window:,} tokens)"
            if window
            else f"None or at least the run's context limit ({context_limit:,} tokens)",
        )
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    dtype_bytes = 2 if config.bf16 else next(base.parameters()).element_size()
    kv_bytes = config.vllm_kv_cache_gb * GIB
    sequence = max_len * kv_bytes_per_token(base.config, dtype_bytes)
    if sequence > kv_bytes:
        raise ConfigError(
            "vllm_kv_cache_gb",
            config.vllm_kv_cache_gb,
            f"at least {sequence / GIB:.3f} GB: the KV cache holds no sequence of "
            f"{max_len:,} tokens (vllm_max_model_len, else the context limit); raise it or "
            "lower max_context_tokens",
        )
    if not torch.cuda.is_available():
        return VLLMBudget(max_len, None)
    free, total = torch.cuda.mem_get_info()
    weights = sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n) * dtype_bytes
    engine = weights + kv_bytes + ENGINE_MARGIN_GIB * GIB
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    spare = free - trainable * TRAINING_BYTES_PER_PARAMETER
    share = config.vllm_gpu_memory_utilization
    need = (
        f"the engine needs {engine / GIB:.1f} GiB (weights {weights / GIB:.1f}, KV cache "
        f"{kv_bytes / GIB:.1f}, margin {ENGINE_MARGIN_GIB:.0f}) of the GPU's {total / GIB:.1f} "
        f"GiB; {free / GIB:.1f} GiB are free, {spare / GIB:.1f} beside training's gradients and "
        "optimizer state"
    )
    if share is None:
        share = math.ceil(engine / total * 100) / 100
        if share * total > spare:
            raise ConfigError(
                "vllm_gpu_memory_utilization",
                None,
                f"a share that fits: {need}; lower vllm_kv_cache_gb, train LoRA (use_peft), "
                "shard the model (docs/scaling.md) or use sampling_backend='hf'",
            )
    elif share * total > free or share * total < weights + kv_bytes:
        raise ConfigError(
            "vllm_gpu_memory_utilization",
            share,
            f"from {(weights + kv_bytes) / total:.2f} to {free / total:.2f}: {need}",
        )
    return VLLMBudget(max_len, share)


def kv_bytes_per_token(model_config: Any, dtype_bytes: int) -> int:
    """KV cache bytes of one token: keys and values of every layer's key/value heads."""
    if hasattr(model_config, "get_text_config"):
        model_config = model_config.get_text_config()
    kv_heads = getattr(model_config, "num_key_value_heads", None)
    kv_heads = kv_heads or model_config.num_attention_heads
    return 2 * model_config.num_hidden_layers * kv_heads * head_size(model_config) * dtype_bytes
