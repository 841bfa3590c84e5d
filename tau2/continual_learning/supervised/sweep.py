"""Hyper-parameter sweeps that survive diverging configurations.

A configuration whose loss explodes (``LossExplosionError`` after too many non-finite losses,
or any ``FloatingPointError``/``RuntimeError`` from the numbers) is recorded as ``crashed``
with its error and the sweep moves on to the next one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tau2.continual_learning.supervised.config import ContinualTrainerConfig
from tau2.continual_learning.supervised.data import TaskData
from tau2.continual_learning.supervised.experiment import run_continual
from tau2.continual_learning.supervised.models import VIBNet

logger = logging.getLogger(__name__)


@dataclass
class SweepResult:
    """One configuration's outcome: ``status`` is ``ok`` or ``crashed``."""

    params: dict[str, Any]
    status: str
    metrics: dict[str, Any] | None
    error: str | None
    wall_s: float


def run_sweep(
    configurations: Iterable[dict[str, Any]], run_one: Callable[[dict[str, Any]], dict[str, Any]]
) -> list[SweepResult]:
    """Call ``run_one(params)`` for every configuration; a diverging one is reported as crashed."""
    results = []
    for params in configurations:
        start = time.perf_counter()
        try:
            metrics, status, error = run_one(params), "ok", None
        except (ArithmeticError, RuntimeError, ValueError) as err:
            metrics, status, error = None, "crashed", f"{type(err).__name__}: {err}"
            logger.warning("sweep configuration %s crashed: %s", params, error)
        results.append(
            SweepResult(dict(params), status, metrics, error, time.perf_counter() - start)
        )
    return results


def vib_beta_sweep(
    tasks: Sequence[TaskData],
    betas: Sequence[tuple[float, float]],
    config: ContinualTrainerConfig | dict[str, Any],
    num_epochs: int = 5,
    batch_size: int = 32,
    seed: int = 0,
    hidden_sizes: Sequence[int] = (256,),
    bottleneck_dim: int = 100,
) -> list[SweepResult]:
    """Train a fresh :class:`VIBNet` for every ``(beta_1, beta_2)`` on ``tasks`` with the given
    trainer config (e.g. ``cl_algorithm="vib_replay"``); returns one result per pair."""
    input_size = int(tasks[0].x_train[0].numel())
    num_classes = 1 + max(max(t.classes or (0,)) for t in tasks)

    def run_one(params: dict[str, Any]) -> dict[str, Any]:
        def model_fn() -> VIBNet:
            return VIBNet(
                input_size,
                num_classes,
                hidden_sizes,
                bottleneck_dim,
                params["beta_1"],
                params["beta_2"],
            )

        return run_continual(model_fn, tasks, config, num_epochs, batch_size, seed)["metrics"]

    return run_sweep(({"beta_1": b1, "beta_2": b2} for b1, b2 in betas), run_one)
