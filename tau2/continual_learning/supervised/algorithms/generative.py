"""Generative replay (Shin et al. 2017) with VAE generators.

During a task, new samples go into a reservoir (``memory_size``) of the *current* task only;
every ``generator_update_freq`` trainer steps the generator makes one update on a
``batch_size`` sample of it, and ``generator_final_steps`` more updates follow at the end of
the task. From the second task on, every step gets ``batch_size`` generated samples whose
targets are the previous model's logits (soft targets), weighted by ``replay_weight``.

``per_task_generators=True`` keeps one frozen VAE per finished task (``task_balanced``: equal
numbers from each; otherwise a random VAE per sample). With a single VAE the generator is
trained on current samples mixed with samples of its frozen previous self (``task_balanced``:
as many generated samples per old task as current samples; otherwise half and half).
Inputs must lie in [0, 1] (the VAE reconstruction loss is a binary cross-entropy).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tau2.continual_learning.cl_algorithm import SUPERVISED_ALGORITHMS, CLAlgorithm
from tau2.continual_learning.supervised.algorithms.replay import frozen_snapshot
from tau2.continual_learning.supervised.batch import Batch
from tau2.continual_learning.supervised.memory import TensorMemory
from tau2.continual_learning.supervised.models import VAE, ConvVAE

logger = logging.getLogger(__name__)

GENERATOR_TYPES = ("vae", "conv_vae")


def build_generator(spec: dict[str, Any], input_shape: Sequence[int]) -> nn.Module:
    """A VAE from a seed-003 ``generator`` section: ``type`` (vae | conv_vae), ``hidden_dims``,
    ``latent_dim``, and for conv_vae ``image_shape`` (C, H, W) and ``channels``."""
    spec = dict(spec)
    kind = spec.pop("type", "vae")
    spec.pop("dropout", None)  # accepted for seed-003 configs; the small VAEs use none
    if kind == "vae":
        return VAE(int(np.prod(input_shape)), **spec)
    if kind == "conv_vae":
        image_shape = spec.pop("image_shape", input_shape)
        if len(image_shape) != 3:
            raise ValueError(f"generator conv_vae needs image_shape=(C, H, W), got {image_shape!r}")
        return ConvVAE(image_shape, **spec)
    raise ValueError(f"generator type={kind!r} is invalid; allowed: {GENERATOR_TYPES}")


def save_sample_grid(
    images: torch.Tensor, path: str | Path, image_shape: Sequence[int], ncols: int = 10
) -> Path:
    """Write a PNG grid of images (any layout reshaped to ``image_shape`` = (H, W) or (C, H, W))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shape = tuple(image_shape)[-2:]
    imgs = images.detach().float().cpu().reshape(len(images), *shape).numpy()
    nrows = math.ceil(len(imgs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols, nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img in zip(axes.flat, imgs, strict=False):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path


@SUPERVISED_ALGORITHMS.register("generative_replay")
class GenerativeReplay(CLAlgorithm):
    """Replay of VAE-generated samples labelled by the previous model."""

    def __init__(
        self,
        memory_size: int = 500,
        batch_size: int = 32,
        replay_weight: float = 1.0,
        generator_update_freq: int = 5,
        task_balanced: bool = True,
        generator: dict[str, Any] | None = None,
        per_task_generators: bool = True,
        generator_lr: float = 1e-3,
        generator_final_steps: int = 300,
        sample_grid_dir: str | None = None,
        image_shape: Sequence[int] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("memory_size", memory_size),
            ("batch_size", batch_size),
            ("generator_update_freq", generator_update_freq),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"generative_replay: {name}={value!r} is invalid; allowed: int >= 1"
                )
        self.memory_size, self.batch_size, self.replay_weight = (
            memory_size,
            batch_size,
            replay_weight,
        )
        self.generator_update_freq, self.task_balanced = generator_update_freq, task_balanced
        self.generator_spec = dict(
            generator or {"type": "vae", "hidden_dims": [256, 128], "latent_dim": 32}
        )
        if self.generator_spec.get("type", "vae") not in GENERATOR_TYPES:
            raise ValueError(
                f"generator type={self.generator_spec.get('type')!r} is invalid; allowed: {GENERATOR_TYPES}"
            )
        self.per_task_generators, self.generator_lr = per_task_generators, generator_lr
        self.generator_final_steps = generator_final_steps
        self.sample_grid_dir, self.image_shape = sample_grid_dir, image_shape
        self.memory = TensorMemory(memory_size, "reservoir", seed)
        self.generators: list[
            nn.Module
        ] = []  # frozen: one per finished task, or the last single one
        self.generator: nn.Module | None = None  # the one being trained
        self._optimizer: torch.optim.Optimizer | None = None
        self._previous_model: nn.Module | None = None
        self._input_shape: tuple[int, ...] | None = None
        self.rng = np.random.default_rng(seed)
        self.generator_updates = 0
        self.grids: list[str] = []

    # -- hooks ---------------------------------------------------------------------------------
    def pre_task_hook(self, trainer: Any, domain: str) -> None:
        self.memory.clear()
        self._previous_model = frozen_snapshot(trainer.model) if self.generators else None
        if self.per_task_generators:
            self.generator = None  # a fresh VAE is built on the task's first batch

    def augment_batch(self, new_tasks: list[Any], current_domain: str) -> list[Any]:
        if not self.generators or self._previous_model is None:
            return list(new_tasks)
        x = self.generate(self.batch_size).to(self._trainer.device)
        with torch.no_grad():
            logits = self._previous_model(x)
        replay = Batch(x, logits.argmax(1), "generated", self.replay_weight, soft_targets=logits)
        return [*new_tasks, replay]

    def post_step_hook(self, trainer: Any, domain: str) -> None:
        new = next(b for b in trainer.last_step.batches if b.kind == "new")
        if self.generator is None:
            self._input_shape = tuple(new.x.shape[1:])
            self.generator = build_generator(self.generator_spec, self._input_shape).to(
                trainer.device
            )
            self._optimizer = torch.optim.Adam(self.generator.parameters(), lr=self.generator_lr)
        if trainer.current_epoch == 0:
            self.memory.add(new.x, new.y, task_id=trainer.current_task_id)
        if trainer.global_step % self.generator_update_freq == 0:
            self.train_generator(1, trainer.device)

    def post_task_hook(self, trainer: Any, domain: str) -> None:
        if self.generator is None:
            return
        self.train_generator(self.generator_final_steps, trainer.device)
        frozen = frozen_snapshot(self.generator)
        self.generators = [*self.generators, frozen] if self.per_task_generators else [frozen]
        if self.sample_grid_dir and self.image_shape:
            path = (
                Path(self.sample_grid_dir)
                / f"generated_after_{trainer.current_task_id}_{domain}.png"
            )
            self.grids.append(str(save_sample_grid(self.generate(50), path, self.image_shape)))
            logger.info("generated-sample grid written to %s", path)

    # -- generator -----------------------------------------------------------------------------
    def train_generator(self, steps: int, device: torch.device | str) -> None:
        """``steps`` VAE updates on current-task samples (plus old generated ones, single VAE)."""
        assert self.generator is not None and self._optimizer is not None
        self.generator.train()
        for _ in range(steps):
            x = self.memory.sample(self.batch_size, device, augment=False).x
            if not self.per_task_generators and self.generators:
                n_old = self.batch_size * (
                    self._trainer.current_task_id if self.task_balanced else 1
                )
                x = torch.cat([x.flatten(1), self.generate(n_old).to(device).flatten(1)])
            loss = self.generator.loss(x).mean()
            self._optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._optimizer.step()
            self.generator_updates += 1

    @torch.no_grad()
    def generate(self, n: int) -> torch.Tensor:
        """``n`` samples from the frozen generators, in the training inputs' shape."""
        if not self.generators or self._input_shape is None:
            raise RuntimeError("no generator has been trained yet")
        k = len(self.generators)
        if self.task_balanced:
            counts = np.full(k, n // k) + (np.arange(k) < n % k)
        else:
            counts = np.bincount(self.rng.integers(k, size=n), minlength=k)
        parts = [g.generate(int(c)) for g, c in zip(self.generators, counts, strict=True) if c]
        return torch.cat(parts).reshape(n, *self._input_shape)

    def get_statistics(self) -> dict[str, Any]:
        return {
            "algorithm": self.name,
            "generators": len(self.generators),
            "generator_updates": self.generator_updates,
            "grids": list(self.grids),
        }
