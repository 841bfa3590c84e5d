"""Scoring a policy on a domain's test split: tau2 pass^1 with a 95% interval."""

from __future__ import annotations

import math
from dataclasses import dataclass

from accelerate import PartialState

from tau2.continual_learning.grpo.rollouts import Rollouts
from tau2.continual_learning.rollout import DomainTask, Episode

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Score:
    """pass^1 over ``n`` episodes and its 95% Wilson score interval (which stays inside
    [0, 1] and is informative at 0 and 1, unlike the normal approximation)."""

    mean: float
    low: float
    high: float
    n: int
    rewards: tuple[float, ...] = ()
    """Each task's reward, in test-split order (for paired bootstrap intervals of ACC etc.)."""

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def pass_at_one(episodes: list[Episode]) -> Score:
    """The share of ``episodes`` with reward 1 (tau2 rewards are 0 or 1), with its interval."""
    n = len(episodes)
    if n == 0:
        return Score(0.0, 0.0, 1.0, 0)
    rewards = tuple(float(e.reward) for e in episodes)
    p = sum(rewards) / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return Score(p, max(0.0, centre - half), min(1.0, centre + half), n, rewards)


class Evaluator:
    """Scores the current policy, one seeded episode per task at ``eval_temperature`` (greedy
    by default): a domain's test split (accuracy-matrix rows, probes, phase scores) or chosen
    tasks (the warm-start guard). Scoring leaves the training RNGs alone."""

    def __init__(self, rollouts: Rollouts, temperature: float, seed: int) -> None:
        self.rollouts = rollouts
        self.temperature = temperature
        self.seed = seed
        self.process = PartialState()
        self.last_episodes: dict[str, list[Episode]] = {}
        """The latest evaluation's episodes per domain (for inspection and reports)."""

    def domain(self, domain: str, limit: int | None = None) -> Score:
        """pass^1 (with its 95% interval) on ``domain``'s test tasks (the first ``limit``)."""
        tasks = self.rollouts.tasks(domain, "test")
        episodes = self._episodes(tasks[:limit] if limit else tasks)
        if episodes:
            self.last_episodes[domain] = episodes
        return pass_at_one(episodes)

    def tasks(self, tasks: list[DomainTask]) -> Score:
        """pass^1 on ``tasks``. Under torchrun every rank gets the main process's score, so
        decisions taken on it agree."""
        score = pass_at_one(self._episodes(tasks))
        if self.process.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            score = broadcast_object_list([score])[0]
        return score

    def _episodes(self, tasks: list[DomainTask]) -> list[Episode]:
        return self.rollouts.run(tasks, 1, self.temperature, self.seed)
