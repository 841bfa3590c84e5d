"""Configuration of the supervised :class:`ContinualTrainer`, from a dataclass, a dict or YAML.

Flat keys map onto :class:`ContinualTrainerConfig`. The nested layout (``continual_strategy`` blocks) is accepted
too::

    optimizer: {type: adam, lr: 0.001}
    continual_strategy:
      generative_replay: {enabled: true, memory_size: 500, replay_weight: 1.0}
    generator: {type: vae, hidden_dims: [256, 128], latent_dim: 32}

``continual_strategy`` names exactly one enabled algorithm (its other keys become
``cl_params``); ``generator`` becomes ``cl_params["generator"]``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TASK_TYPES = ("classification", "regression")
OPTIMIZERS = ("sgd", "adam", "adamw", "adagrad")
SCENARIOS = ("class_il", "task_il")
REGRESSION_SCORES = ("mse", "nmse")


@dataclass
class ContinualTrainerConfig:
    """Every knob of the supervised trainer; validated on construction."""

    task_type: str = "classification"
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    reset_optimizer: bool = False
    lr_decay_gamma: float = 1.0  # ELRD: ExponentialLR stepped per batch over the whole run
    grad_clip_norm: float | None = None
    mixed_precision: bool = True  # used only when the device is CUDA
    device: str = "auto"
    eval_scenarios: tuple[str, ...] = ("class_il",)
    regression_score: str = "mse"
    eval_every_epoch: bool = True
    eval_batch_size: int = 512
    progress_bar: bool = True
    max_consecutive_nan: int = 10
    seed: int | None = 0
    cl_algorithm: str = "naive"
    cl_params: dict[str, Any] = field(default_factory=dict)
    freeze_after_first_task: tuple[str, ...] = ()  # submodule names, e.g. ("encoder",)

    def __post_init__(self) -> None:
        self.eval_scenarios = tuple(self.eval_scenarios)
        self.freeze_after_first_task = tuple(self.freeze_after_first_task)
        choices = {
            "task_type": TASK_TYPES,
            "optimizer": OPTIMIZERS,
            "regression_score": REGRESSION_SCORES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid; allowed: {allowed}")
        bad = [s for s in self.eval_scenarios if s not in SCENARIOS]
        if bad or not self.eval_scenarios:
            raise ValueError(
                f"eval_scenarios={self.eval_scenarios!r} is invalid; allowed: non-empty subset of {SCENARIOS}"
            )
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr!r} is invalid; allowed: > 0")
        if not 0 < self.lr_decay_gamma <= 1:
            raise ValueError(f"lr_decay_gamma={self.lr_decay_gamma!r} is invalid; allowed: (0, 1]")
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            raise ValueError(
                f"grad_clip_norm={self.grad_clip_norm!r} is invalid; allowed: None or > 0"
            )
        for name in ("eval_batch_size", "max_consecutive_nan"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid; allowed: >= 1")
        if not isinstance(self.cl_params, dict):
            raise ValueError(f"cl_params={self.cl_params!r} is invalid; allowed: a dict")

    @property
    def higher_is_better(self) -> bool:
        return self.task_type == "classification"


def _from_nested(raw: dict[str, Any]) -> dict[str, Any]:
    """Translate seed-003 style nested sections into flat fields."""
    flat = dict(raw)
    opt = flat.pop("optimizer", None)
    if isinstance(opt, dict):
        opt = dict(opt)
        flat["optimizer"] = opt.pop("type", "sgd")
        flat.update(opt)
    elif opt is not None:
        flat["optimizer"] = opt
    strategies = flat.pop("continual_strategy", None)
    params = dict(flat.pop("cl_params", {}) or {})
    if strategies is not None:
        if not isinstance(strategies, dict):
            raise ValueError(
                f"continual_strategy={strategies!r} is invalid; allowed: a mapping name -> params"
            )
        enabled = [n for n, p in strategies.items() if (p or {}).get("enabled", True)]
        if len(enabled) != 1:
            raise ValueError(
                f"continual_strategy must enable exactly one algorithm, got {enabled or 'none'}"
            )
        name = enabled[0]
        flat["cl_algorithm"] = name
        params.update({k: v for k, v in (strategies[name] or {}).items() if k != "enabled"})
    generator = flat.pop("generator", None)
    if generator is not None:
        params["generator"] = generator
    flat["cl_params"] = params
    return flat


def load_config(
    source: ContinualTrainerConfig | dict[str, Any] | str | Path | None,
) -> ContinualTrainerConfig:
    """A validated config from a dataclass instance, a dict, or a YAML file path."""
    if source is None:
        return ContinualTrainerConfig()
    if isinstance(source, ContinualTrainerConfig):
        return source
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        source = yaml.safe_load(path.read_text()) or {}
        if not isinstance(source, dict):
            raise ValueError(
                f"config file {str(path)!r} must hold a mapping, got {type(source).__name__}"
            )
    if not isinstance(source, dict):
        raise TypeError(
            f"config must be a ContinualTrainerConfig, dict or YAML path, got {type(source).__name__}"
        )
    flat = _from_nested(source)
    known = {f.name for f in dataclasses.fields(ContinualTrainerConfig)}
    unknown = sorted(set(flat) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; allowed: {sorted(known)}")
    return ContinualTrainerConfig(**flat)
