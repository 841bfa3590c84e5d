"""Scoring a policy on a domain's test split: tau2 pass^1 with a 95% interval."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tau2.continual_learning.rollout import Episode

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


def step_statistics(episodes: list[Episode], group_size: int, domain: str, step: int) -> dict:
    """One step's training signal: mean reward, and the share of GRPO groups whose rewards are
    not all equal (the *informative* groups; a group of equal rewards has zero advantage and
    gives TRL's loss no gradient)."""
    groups = [episodes[i : i + group_size] for i in range(0, len(episodes), group_size)]
    informative = sum(len({e.reward for e in g}) > 1 for g in groups)
    return {
        "domain": domain,
        "global_step": step,
        "reward_mean": sum(e.reward for e in episodes) / len(episodes) if episodes else 0.0,
        "groups": len(groups),
        "informative_groups": informative,
        "informative_share": informative / len(groups) if groups else 0.0,
    }
