"""The one definition of each GRPO algorithm parameter's valid values.

Algorithms check their constructor arguments with :func:`check`; ``GRPOConfig`` declares its flat
fields (``--replay_ratio`` ...) with these same :class:`~tau2.continual_learning.rules.Rule`\\ s,
so a bad value fails at construction, whichever algorithm is selected, with the same message
wherever it is given.
"""

from __future__ import annotations

from typing import Any

from tau2.continual_learning.grpo.trajectory_buffer import SAMPLING_STRATEGIES
from tau2.continual_learning.rules import InvalidValue, Rule
from tau2.continual_learning.rules import check as check_rules

SHARE = Rule(float, 0.0, 1.0, open_high=True, note="some of every batch must be new tasks")

RULES: dict[str, Rule] = {
    "replay_ratio": SHARE,
    "min_replay_ratio": SHARE,
    "max_replay_ratio": SHARE,
    "replay_strategy": Rule(str, choices=lambda: SAMPLING_STRATEGIES),
    "min_buffer_size": Rule(int, low=0),
    "adaptation_rate": Rule(float, 0.0, 1.0, open_low=True),
    "forgetting_threshold": Rule(float, 0.0, 1.0, open_low=True),
    "probe_interval": Rule(int, low=1),
    "probe_tasks": Rule(int, low=1),
    "bc_weight": Rule(float, low=0.0),
    "bc_batch_size": Rule(int, low=1),
}


def check(**values: Any) -> None:
    """Raise :class:`~tau2.continual_learning.rules.InvalidValue` for the first value that breaks
    its rule."""
    check_rules(RULES, values)


def check_ratio_bounds(
    min_replay_ratio: float, max_replay_ratio: float, initial: tuple[str, float] | None = None
) -> None:
    """``min <= max``, and an adaptive ratio's start (``(name, value)``) within them."""
    check(min_replay_ratio=min_replay_ratio, max_replay_ratio=max_replay_ratio)
    if min_replay_ratio > max_replay_ratio:
        raise InvalidValue(
            "min_replay_ratio", min_replay_ratio, f"<= max_replay_ratio ({max_replay_ratio})"
        )
    if initial is not None and not min_replay_ratio <= initial[1] <= max_replay_ratio:
        raise InvalidValue(
            initial[0],
            initial[1],
            f"within [min_replay_ratio, max_replay_ratio] = [{min_replay_ratio}, "
            f"{max_replay_ratio}] for adaptive_replay",
        )
