"""Exploration schedules that can be restarted, as consolidation does to every agent it clones."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise


class EpsilonSchedule:
    """Piecewise-linear epsilon over the steps since the last reset.

    ``points`` are ``(step, epsilon)`` pairs with increasing steps, the first at step 0;
    epsilon is interpolated between them and stays at the last value after the last one.
    ``reset(start)`` restarts at step 0, optionally from another starting value (the later
    points are kept), which is how a cloned agent can start exploring again from 1.0, from
    0.5, or not at all.
    """

    def __init__(self, points: Sequence[tuple[int, float]]) -> None:
        points = [(int(s), float(e)) for s, e in points]
        if not points or points[0][0] != 0:
            raise ValueError("points must be non-empty and start at step 0")
        if any(b[0] <= a[0] for a, b in pairwise(points)):
            raise ValueError(f"point steps must increase: {points}")
        if any(not 0.0 <= e <= 1.0 for _, e in points):
            raise ValueError(f"epsilon values must lie in [0, 1]: {points}")
        self.points = points
        self.start = points[0][1]
        self.steps = 0
        self.resets = 0

    @classmethod
    def linear(cls, start: float, end: float, steps: int) -> EpsilonSchedule:
        """From ``start`` down (or up) to ``end`` over ``steps`` steps, then constant."""
        return cls([(0, start), (max(1, steps), end)])

    def value(self) -> float:
        """Epsilon at the current step."""
        points = [(0, self.start), *self.points[1:]]
        for (s0, e0), (s1, e1) in pairwise(points):
            if self.steps < s1:
                return e0 + (e1 - e0) * (self.steps - s0) / (s1 - s0)
        return points[-1][1]

    def step(self, n: int = 1) -> None:
        """Advance by ``n`` environment steps."""
        self.steps += n

    def reset(self, start: float | None = None) -> None:
        """Restart at step 0, from ``start`` if given, else from the first point's value."""
        if start is not None and not 0.0 <= start <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {start}")
        self.start = self.points[0][1] if start is None else float(start)
        self.steps = 0
        self.resets += 1

    def state_dict(self) -> dict:
        return {
            "points": self.points,
            "start": self.start,
            "steps": self.steps,
            "resets": self.resets,
        }

    def load_state_dict(self, state: Mapping) -> None:
        self.points = [tuple(p) for p in state["points"]]
        self.start, self.steps, self.resets = state["start"], state["steps"], state["resets"]

    def __repr__(self) -> str:
        return f"EpsilonSchedule({self.points}, step {self.steps}, epsilon {self.value():.3f})"
