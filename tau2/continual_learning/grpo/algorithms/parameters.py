"""The one definition of each GRPO algorithm parameter's valid values.

Algorithms check their constructor arguments with :func:`check`; ``GRPOConfig`` checks its flat
fields (``--replay_ratio`` ...) with the same rules at construction, whichever algorithm is
selected, so a bad value fails early with the same message wherever it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tau2.continual_learning.grpo.trajectory_buffer import SAMPLING_STRATEGIES


class InvalidParameter(ValueError):
    """A parameter value outside its rule: carries the name, the value and what is allowed."""

    def __init__(self, name: str, value: Any, allowed: str) -> None:
        self.name, self.value, self.allowed = name, value, allowed
        super().__init__(f"{name}={value!r} is invalid: {allowed}")


def _share(v: Any) -> bool:
    return isinstance(v, int | float) and 0.0 <= v < 1.0


RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "replay_ratio": (_share, "a share in [0, 1): some of every batch must be new tasks"),
    "min_replay_ratio": (_share, "a share in [0, 1): some of every batch must be new tasks"),
    "max_replay_ratio": (_share, "a share in [0, 1): some of every batch must be new tasks"),
    "replay_strategy": (
        lambda v: v in SAMPLING_STRATEGIES,
        f"one of {tuple(SAMPLING_STRATEGIES)} (e.g. high_reward)",
    ),
    "min_buffer_size": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "adaptation_rate": (lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    "forgetting_threshold": (lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    "probe_interval": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "probe_tasks": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "bc_weight": (lambda v: v >= 0.0, ">= 0"),
    "bc_batch_size": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
}


def check(**values: Any) -> None:
    """Raise :class:`InvalidParameter` for the first value that breaks its rule."""
    for name, value in values.items():
        valid, allowed = RULES[name]
        if not valid(value):
            raise InvalidParameter(name, value, allowed)


def check_ratio_bounds(
    min_replay_ratio: float, max_replay_ratio: float, initial: tuple[str, float] | None = None
) -> None:
    """``min <= max``, and an adaptive ratio's start (``(name, value)``) within them."""
    check(min_replay_ratio=min_replay_ratio, max_replay_ratio=max_replay_ratio)
    if min_replay_ratio > max_replay_ratio:
        raise InvalidParameter(
            "min_replay_ratio", min_replay_ratio, f"<= max_replay_ratio ({max_replay_ratio})"
        )
    if initial is not None and not min_replay_ratio <= initial[1] <= max_replay_ratio:
        raise InvalidParameter(
            initial[0],
            initial[1],
            f"within [min_replay_ratio, max_replay_ratio] = [{min_replay_ratio}, "
            f"{max_replay_ratio}] for adaptive_replay",
        )
