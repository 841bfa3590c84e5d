"""A guard against a warm start that breaks the policy.

A supervised warm start at the default learning rate usually lifts a domain a lot, but on a
small model it can also leave a policy that writes degenerate turns (every turn running to the
token limit) and fails every domain, old and new; no GRPO step can repair that, because no group
has a success left. Lowering the learning rate for every run would avoid it and cost the other
runs learning (docs/results.md, "Warm-start guard" and "Warm-start learning rate"), so the guard
acts only when it is needed.

**What it does** (:meth:`WarmStartGuard.run`). Before the warm start it scores the model greedily
on the first ``tasks`` of the domain's demonstration tasks (train tasks, never the test split)
and snapshots the trainable parameters. After the warm start it scores again. A warm start
that lowers the score on the very tasks it trained on has failed; it is undone (the snapshot is
copied back in place) and retried at half the learning rate, up to ``retries`` times. When every
attempt fails, the pre-warm-start weights stay and the domain goes on to its GRPO steps from
there. Every score, learning rate and decision is logged and returned for ``metrics.json``.

**Neutral when it passes.** Scoring is greedy evaluation (its own seeded RNG fork, the episode
engine's caches cleared when it ends), so a run whose warm starts all pass trains exactly as the
same run without the guard; the cost is the two scorings per domain.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["WarmStartGuard", "restore_parameters", "trainable_snapshot"]


def trainable_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of ``model``'s trainable parameters (a LoRA adapter: a few MB)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def restore_parameters(model: torch.nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    """Copy ``snapshot`` back into ``model``'s parameters in place, so that optimizers and
    sampling engines holding them see the restored values (and their version counters move)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in snapshot:
                param.copy_(snapshot[name])


class WarmStartGuard:
    """Score, warm-start, score again; undo and retry at half the learning rate on a drop."""

    def __init__(self, tasks: int, retries: int) -> None:
        self.tasks = tasks
        """How many of the domain's demonstration tasks are scored (0: the guard is off)."""
        self.retries = retries
        """Retries at half the previous attempt's learning rate after a failed attempt."""

    @property
    def enabled(self) -> bool:
        return self.tasks > 0

    def run(
        self,
        model: torch.nn.Module,
        warm_start: Callable[[float], tuple[dict[str, Any], list[dict[str, Any]]]],
        score: Callable[[], float] | None,
        learning_rate: float,
        domain: str,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Run ``warm_start(learning_rate)`` under the guard; ``score()`` scores the model now
        (``None``: nothing to score, the warm start runs unguarded). Returns the kept attempt's
        statistics (with a ``guard`` entry: the scores before and after each attempt, their
        learning rates, which attempt was kept, ``None`` if none, and the seconds spent
        scoring) and every attempt's log rows (``warm_start_attempt``)."""
        if score is None:
            return warm_start(learning_rate)
        scoring_s = 0.0

        def timed_score() -> float:
            nonlocal scoring_s
            start = time.perf_counter()
            value = score()
            scoring_s += time.perf_counter() - start
            return value

        before = timed_score()
        snapshot = trainable_snapshot(model)
        attempts: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        kept: int | None = None
        stats: dict[str, Any] = {}
        rate = learning_rate
        for attempt in range(self.retries + 1):
            stats, attempt_rows = warm_start(rate)
            after = timed_score()
            attempts.append({"learning_rate": rate, "score": after})
            rows += [{**row, "warm_start_attempt": attempt + 1} for row in attempt_rows]
            if after >= before:
                kept = attempt
                logger.info(
                    "Warm start %s at learning rate %.3g: its %d checked tasks scored %.3f "
                    "before, %.3f after: kept",
                    domain,
                    rate,
                    self.tasks,
                    before,
                    after,
                )
                break
            restore_parameters(model, snapshot)
            logger.warning(
                "Warm start %s at learning rate %.3g lowered its tasks' score from %.3f to %.3f: "
                "undone%s",
                domain,
                rate,
                before,
                after,
                f", retrying at {rate / 2:.3g}" if attempt < self.retries else "",
            )
            rate /= 2
        if kept is None:
            logger.warning(
                "Warm start %s: every attempt lowered the score; the domain trains from the "
                "weights it had before its warm start",
                domain,
            )
        stats = {
            **stats,
            "guard": {
                "tasks": self.tasks,
                "score_before": before,
                "attempts": attempts,
                "kept_attempt": kept,
                "scoring_seconds": scoring_s,
            },
        }
        return stats, rows
