"""Load a policy model and tokenizer: the embedded default, a local folder, or a hub id."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tau2.continual_learning import default_model

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


class ModelLoadError(ValueError):
    """A model name or path that cannot be loaded; the message says what was tried."""


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else that names a location is a path."""
    return name.startswith(("/", "./", "../", "~", ".")) or name.count("/") > 1 or "\\" in name


def resolve_model_path(name_or_path: str | None) -> str:
    """Turn a user's model selector into something ``from_pretrained`` accepts.

    ``None`` and the embedded model's aliases give the converted cache folder; an existing
    folder is returned as is; a missing filesystem path raises :class:`ModelLoadError`;
    anything else is treated as a Hugging Face hub id.
    """
    if default_model.is_default_model(name_or_path):
        return str(default_model.default_model_path())
    assert name_or_path is not None
    expanded = Path(name_or_path).expanduser()
    if expanded.exists():
        if not expanded.is_dir():
            raise ModelLoadError(
                f"Model path {name_or_path!r} is a file; pass the folder that holds config.json."
            )
        return str(expanded)
    if _looks_like_path(name_or_path):
        raise ModelLoadError(
            f"Model path {name_or_path!r} does not exist. Pass an existing folder with a "
            f"transformers model, a Hugging Face model id such as 'Qwen/Qwen2.5-0.5B-Instruct', "
            f"or {default_model.DEFAULT_MODEL_NAME!r} for the embedded default model."
        )
    return name_or_path


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # decoder-only batched generation
    return tokenizer


def _hub_error(name: str, exc: Exception) -> ModelLoadError:
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    hint = (
        " HF_HUB_OFFLINE is set, so only models already in the local hub cache load."
        if offline
        else ""
    )
    return ModelLoadError(
        f"Could not load model {name!r}: not a local folder and not loadable from the Hugging Face hub ({exc}).{hint}"
    )


def load_tokenizer(name_or_path: str | None = None, **kwargs: Any) -> PreTrainedTokenizerBase:
    """Tokenizer for ``name_or_path`` (default: the embedded model), set up for left padding."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise _hub_error(path, exc) from exc
    return _prepare_tokenizer(tokenizer)


def load_model_and_tokenizer(
    name_or_path: str | None = None,
    *,
    dtype: Any = None,
    device: str | None = None,
    **model_kwargs: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer; ``None`` selects the embedded default model.

    ``dtype`` defaults to float32 on CPU and bfloat16 on CUDA when supported.
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name_or_path)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None:
        cuda_bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
        dtype = torch.bfloat16 if cuda_bf16 else torch.float32
    tokenizer = load_tokenizer(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **model_kwargs)
    except (OSError, ValueError) as exc:
        raise _hub_error(path, exc) from exc
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    logger.info(
        "Loaded model %s (%s, %s)", name_or_path or default_model.DEFAULT_MODEL_NAME, dtype, device
    )
    return model.to(device), tokenizer


def wrap_lora(
    model: PreTrainedModel,
    r: int,
    alpha: int,
    dropout: float,
    target_modules: list[str] | None = None,
) -> Any:
    """``model`` with a fresh LoRA adapter (PEFT) on ``target_modules`` (default: every linear
    layer)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules or "all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)
