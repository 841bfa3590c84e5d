"""Which engine samples a run's episodes: ``sampling_backend='auto'`` becomes vLLM where it is
installed and measured faster (a GPU, or a CPU with native bfloat16), else transformers; and
``vllm`` is kept only for a model it can serve (:func:`vllm_refusal`). ``GRPOConfig`` settles
at construction with the model's config where it is on this machine, and again when the trainer
gets the model it trains."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from tau2.continual_learning import default_model
from tau2.continual_learning.grpo.config_error import ConfigError
from tau2.continual_learning.grpo.token_batch import bf16_supported
from tau2.continual_learning.sampling_defaults import vllm_available, vllm_refusal

logger = logging.getLogger(__name__)

SAMPLING_BACKENDS = ("hf", "vllm", "auto")


def installed_backend() -> str:
    """What ``auto`` stands for before the model is known: ``vllm`` where it is installed and
    faster, else ``hf``. On a CPU without native bfloat16 both engines run float32 and the
    default job took as long with vLLM as with transformers, for more memory; where the CPU has
    bfloat16 (or on a GPU) vLLM's job was 1.36x faster (docs/results.md, the default CPU job)."""
    if not vllm_available():
        return "hf"
    if torch.cuda.is_available() or bf16_supported():
        return "vllm"
    logger.info("sampling_backend='auto' samples with 'hf': this CPU has no native bfloat16")
    return "hf"


def settled_backend(backend: str, model_config: Any, auto: bool) -> str:
    """``backend``, unless it is ``vllm`` and vLLM cannot serve a model of ``model_config``: then
    ``hf`` with a logged warning where ``auto`` chose vLLM, a :class:`ConfigError` where it was
    asked for by name (before any work)."""
    if backend != "vllm":
        return backend
    reason = vllm_refusal(model_config, on_cpu=not torch.cuda.is_available())
    if reason is None:
        return backend
    if auto:
        logger.warning("sampling_backend='auto' samples with 'hf': %s", reason)
        return "hf"
    raise ConfigError("sampling_backend", "vllm", f"'hf' or 'auto' for this model: {reason}")


def local_model_config(name_or_path: str) -> Any:
    """The transformers config of a model already on this machine (a folder, or the embedded
    model once converted); ``None`` otherwise (the trainer checks the model it loads)."""
    from transformers import AutoConfig

    if default_model.is_default_model(name_or_path):
        folder = default_model.cache_dir() if default_model.is_cached() else None
    else:
        folder = Path(name_or_path).expanduser()
    if folder is None or not (folder / "config.json").is_file():
        return None
    return AutoConfig.from_pretrained(folder)
