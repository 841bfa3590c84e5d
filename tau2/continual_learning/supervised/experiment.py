"""Helpers shared by the benchmark, the paper-table command and sweeps: run one continual
experiment, aggregate seeds, render a markdown table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from tau2.continual_learning.supervised.config import ContinualTrainerConfig, load_config
from tau2.continual_learning.supervised.data import TaskData
from tau2.continual_learning.supervised.trainer import ContinualTrainer


def run_continual(
    model_fn: Callable[[], nn.Module],
    tasks: Sequence[TaskData],
    config: ContinualTrainerConfig | dict[str, Any],
    num_epochs: int,
    batch_size: int,
    seed: int,
) -> dict[str, Any]:
    """Seed, build the model, train through ``tasks``; returns metrics per scenario, score
    matrices, the baseline, the trainer's statistics and the wall time."""
    cfg = load_config(config)
    cfg = ContinualTrainerConfig(**{**vars(cfg), "seed": seed})
    torch.manual_seed(seed)
    start = time.perf_counter()
    trainer = ContinualTrainer(model_fn(), cfg)
    metrics = trainer.fit(tasks, num_epochs, batch_size, seed)
    return {
        "metrics": metrics,
        "matrices": trainer.score_matrices,
        "baseline": trainer.baseline,
        "statistics": trainer.get_statistics(),
        "wall_s": time.perf_counter() - start,
    }


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation, ignoring ``None`` (``None`` if nothing is left)."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def markdown_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], digits: int = 3
) -> str:
    """A markdown table; ``columns`` are ``(key, header)``; floats rounded to ``digits``."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"
