"""One step's task groups: the new tasks of the current domain plus what the algorithm replays."""

from __future__ import annotations

from tau2.continual_learning.cl_algorithm import CLAlgorithm
from tau2.continual_learning.rollout import DomainTask


def compose_batch(
    algorithm: CLAlgorithm, new_tasks: list[DomainTask], current_domain: str
) -> list[DomainTask]:
    """``len(new_tasks)`` task groups: ``algorithm.num_replay_slots`` of them are offered for
    replay, the algorithm gets the remaining new tasks to augment, and the result is read by
    task key: returned tasks among the offered ones are new, the others replayed. Unfilled
    replay slots are refilled with new tasks, surplus tasks are dropped (new ones first), and
    at least one new task is always kept."""
    size = len(new_tasks)
    slots = min(algorithm.num_replay_slots(size), size - 1)
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
