"""tau2-continual: continual GRPO training of LLM agents on tau2-bench domains.

Importing this package is cheap and side-effect free apart from making later ``tau2``
imports offline and quiet (see :mod:`tau2.continual_learning.hygiene`). Heavy pieces
(torch, transformers, TRL) load lazily on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

from tau2.continual_learning.hygiene import configure_tau2_environment

configure_tau2_environment()

__version__ = "0.1.0"

_LAZY = {
    "GRPOConfig": "tau2.continual_learning.grpo.config",
    "GRPOTrainer": "tau2.continual_learning.grpo.trainer",
    "CLAlgorithm": "tau2.continual_learning.continual_learning",
    "ReplayCL": "tau2.continual_learning.continual_learning",
    "AdaptiveReplayCL": "tau2.continual_learning.continual_learning",
    "SequentialCL": "tau2.continual_learning.continual_learning",
    "register_cl_algorithm": "tau2.continual_learning.continual_learning",
    "TrajectoryBuffer": "tau2.continual_learning.grpo.trajectory_buffer",
    "TrajectoryRecord": "tau2.continual_learning.grpo.trajectory_buffer",
    "compute_cl_metrics": "tau2.continual_learning.metrics",
    "EpisodeRunner": "tau2.continual_learning.rollout",
    "Episode": "tau2.continual_learning.rollout",
    "DomainTask": "tau2.continual_learning.rollout",
    "load_tasks": "tau2.continual_learning.rollout",
    "available_domains": "tau2.continual_learning.rollout",
    "HFPolicy": "tau2.continual_learning.rollout",
    "VLLMPolicy": "tau2.continual_learning.rollout",
    "HFUser": "tau2.continual_learning.rollout",
    "LiteLLMUser": "tau2.continual_learning.rollout",
    "ContinualTrainer": "tau2.continual_learning.supervised",
    "ContinualTrainerConfig": "tau2.continual_learning.supervised",
    "make_insertion_policy": "tau2.continual_learning.insertion_policies",
    "DEFAULT_MODEL_NAME": "tau2.continual_learning.default_model",
    "default_model_path": "tau2.continual_learning.default_model",
    "load_model_and_tokenizer": "tau2.continual_learning.model_loading",
    "load_tokenizer": "tau2.continual_learning.model_loading",
    "ModelLoadError": "tau2.continual_learning.model_loading",
    "set_verbosity": "tau2.continual_learning.hygiene",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tau2.continual_learning' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
