"""One step's task groups: the new tasks of the current domain plus what the algorithm replays."""

from __future__ import annotations

import random

from tau2.continual_learning.cl_algorithm import CLAlgorithm
from tau2.continual_learning.grpo.algorithms.replay import ReplayCL
from tau2.continual_learning.rollout import DomainTask


def replay_slots(algorithm: CLAlgorithm, batch_size: int, rng: random.Random) -> int:
    """How many of a step's ``batch_size`` task groups are offered for replay: a
    :class:`ReplayCL`'s ``num_replay_slots(batch_size, rng)`` (``rng``: the step's seeded
    draw), at most ``batch_size - 1`` (a step always keeps a new task); 0 for other
    algorithms, whose ``augment_batch`` may still return earlier tasks (they then take new
    tasks' places)."""
    if not isinstance(algorithm, ReplayCL):
        return 0
    return min(algorithm.num_replay_slots(batch_size, rng), batch_size - 1)


def compose_batch(
    algorithm: CLAlgorithm, new_tasks: list[DomainTask], current_domain: str, slots: int
) -> list[DomainTask]:
    """``len(new_tasks)`` task groups: ``slots`` of them (:func:`replay_slots`) are offered for
    replay, the algorithm gets the remaining new tasks to augment, and the result is read by
    task key: returned tasks among the offered ones are new, the others replayed. Unfilled
    replay slots are refilled with new tasks, surplus tasks are dropped (new ones first), and
    at least one new task is always kept."""
    size = len(new_tasks)
    offered = new_tasks[: size - slots]
    result = list(algorithm.augment_batch(list(offered), current_domain))
    for task in result:
        if not isinstance(task, DomainTask):
            raise TypeError(f"augment_batch returned a {type(task).__name__}, expected DomainTask")
    offered_keys = {t.key for t in offered}
    fresh = [t for t in result if t.key in offered_keys]
    replay = [t for t in result if t.key not in offered_keys][: size - 1]
    kept = {t.key for t in fresh}
    fresh += [t for t in new_tasks if t.key not in kept]
    return fresh[: size - len(replay)] + replay
