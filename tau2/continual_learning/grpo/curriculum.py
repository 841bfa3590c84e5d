"""``PassRateCurriculum``: which train tasks a GRPO step rolls out, by their recorded success.

A GRPO group of G episodes has signal only when its rewards differ, which for a task with
success rate p happens with probability ``1 - p**G - (1 - p)**G``: zero for a task the policy
always or never solves, largest at p = 0.5. After a warm start most tasks sit at 0 or 1, so a
step drawn uniformly wastes most of its groups. The curriculum records each task's rewards
from finished episodes and fills a step with, in this order:

1. ``informative`` tasks: recorded success rate strictly between 0 and 1;
2. ``unseen`` tasks: nothing recorded yet (their rate is unknown, so worth a look);
3. the ``rest``: recorded rate exactly 0 or 1.

Inside a tier the order is a shuffle seeded by ``(seed, step)``: deterministic for a run, and
different tasks of a large tier get their turn from step to step. ``window`` keeps only each
task's latest rewards, so a rate follows the policy as it changes; the trainer sets it to the
group size, so a task's tier is that of its latest group. Without a window a task that was once
informative stays so after the policy has learned it (rewards 0, 1, 1, 1, ... never average 1),
and the informative tier fills every step with the same few learned tasks. Rewards are tau2's
(binary); record those, not a shaped training reward.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tau2.continual_learning.rollout.episode import Episode

TIERS = ("informative", "unseen", "rest")
"""The curriculum's tiers, most preferred first."""


class KeyedTask(Protocol):
    """What the curriculum needs of a task: its key (``DomainTask.key``)."""

    @property
    def key(self) -> str: ...


class PassRateCurriculum:
    """Per-task success record (task key -> rewards) and the pass-rate choice of a step's
    train tasks (see the module docstring)."""

    def __init__(self, seed: int = 0, window: int | None = None) -> None:
        if window is not None and window < 1:
            raise ValueError(f"curriculum window must be None or >= 1, got {window!r}")
        self.seed = seed
        self.window = window
        self.rewards: dict[str, list[float]] = {}

    # -- recording ----------------------------------------------------------------------------
    def record(self, key: str, reward: float) -> None:
        """Record one finished episode's reward (in [0, 1]) for task ``key``."""
        if not 0.0 <= reward <= 1.0:
            raise ValueError(f"curriculum reward for {key!r} must be in [0, 1], got {reward!r}")
        history = self.rewards.setdefault(key, [])
        history.append(float(reward))
        if self.window is not None:
            del history[: -self.window]

    def record_episodes(self, episodes: Iterable[Episode]) -> None:
        """Record the tau2 reward of each finished episode under its task key."""
        for episode in episodes:
            self.record(episode.task.key, episode.reward)

    def success_rate(self, key: str) -> float | None:
        """Mean recorded reward of task ``key``; ``None`` when nothing is recorded."""
        history = self.rewards.get(key)
        return sum(history) / len(history) if history else None

    def tier(self, key: str) -> str:
        """The tier (:data:`TIERS`) of task ``key``."""
        rate = self.success_rate(key)
        if rate is None:
            return "unseen"
        return "informative" if 0.0 < rate < 1.0 else "rest"

    # -- choosing -----------------------------------------------------------------------------
    def choose(self, tasks: Sequence[KeyedTask], count: int, step: int) -> list[KeyedTask]:
        """``count`` of ``tasks`` (distinct, fewer if there are fewer) for step ``step``:
        informative first, then unseen, then the rest, shuffled within a tier by
        ``(seed, step)``."""
        if count < 0:
            raise ValueError(f"curriculum count must be >= 0, got {count!r}")
        order = list(tasks)
        random.Random(f"curriculum:{self.seed}:{step}").shuffle(order)
        rank = {name: index for index, name in enumerate(TIERS)}
        order.sort(key=lambda task: rank[self.tier(task.key)])  # stable: shuffled within tiers
        return order[:count]

    def tier_counts(self, tasks: Iterable[KeyedTask]) -> dict[str, int]:
        """How many of ``tasks`` are in each tier (for step logs)."""
        counts = dict.fromkeys(TIERS, 0)
        for task in tasks:
            counts[self.tier(task.key)] += 1
        return counts

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: seed, window and the recorded rewards."""
        return {"seed": self.seed, "window": self.window, "rewards": copy.deepcopy(self.rewards)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.seed = state["seed"]
        self.window = state["window"]
        self.rewards = copy.deepcopy(state["rewards"])
