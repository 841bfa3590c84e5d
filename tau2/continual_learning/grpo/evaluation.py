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

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def pass_at_one(episodes: list[Episode]) -> Score:
    """The share of ``episodes`` with reward 1 (tau2 rewards are 0 or 1), with its interval."""
    n = len(episodes)
    if n == 0:
        return Score(0.0, 0.0, 1.0, 0)
    p = sum(e.reward for e in episodes) / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return Score(p, max(0.0, centre - half), min(1.0, centre + half), n)
