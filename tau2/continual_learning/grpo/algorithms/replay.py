"""Experience replay for GRPO: a fixed share of the steps' task groups comes from earlier
domains (in expectation: a step's replayed groups are ``replay_ratio x B`` rounded
stochastically). A replayed task gets fresh rollouts like any new one, so GRPO's group structure is
kept. The same share of earlier domains' demonstrations joins each warm start."""

from __future__ import annotations

import math
import random
from typing import Any

from tau2.continual_learning.cl_algorithm import GRPO_ALGORITHMS, CLAlgorithm
from tau2.continual_learning.grpo.algorithms.parameters import check


@GRPO_ALGORITHMS.register("replay")
class ReplayCL(CLAlgorithm):
    """Experience replay: a fixed share of the task groups are tasks from earlier domains.

    Args:
        replay_ratio: expected share of each step's task groups that are replayed tasks, in
            [0, 1) (see :meth:`num_replay_slots`).
        replay_strategy: how records are drawn from the buffer: ``random``, ``high_reward``,
            ``recent`` or ``balanced`` (equal shares across earlier domains).
        min_buffer_size: replay starts once the earlier domains' buffers hold this many records.
        replay_all_domains: replay from every earlier domain, or only from the latest one.
    """

    def __init__(
        self,
        replay_ratio: float = 0.25,
        replay_strategy: str = "random",
        min_buffer_size: int = 8,
        replay_all_domains: bool = True,
    ) -> None:
        super().__init__()
        check(
            replay_ratio=replay_ratio,
            replay_strategy=replay_strategy,
            min_buffer_size=min_buffer_size,
        )
        self.replay_ratio = float(replay_ratio)
        self.replay_strategy = replay_strategy
        self.min_buffer_size = int(min_buffer_size)
        self.replay_all_domains = bool(replay_all_domains)
        self.total_replay_samples = 0
        self.replay_samples_per_domain: dict[str, int] = {}
        self.skipped_replay_steps = 0

    # -- batch composition -------------------------------------------------------------------
    def previous_domains(self, current_domain: str) -> list[str]:
        """Earlier domains of the sequence, the ones replay draws from."""
        trainer = self._trainer
        if trainer is None:
            return []
        order = list(trainer.config.domains)
        earlier = order[: order.index(current_domain)] if current_domain in order else []
        if not self.replay_all_domains:
            earlier = earlier[-1:]
        return earlier

    def num_replay_slots(self, batch_size: int, rng: random.Random) -> int:
        """How many of a step's ``batch_size`` task groups this algorithm asks to replay:
        ``replay_ratio * batch_size`` rounded stochastically (the integer part, plus one with
        the fractional part's probability, drawn from ``rng``), so the long-run share of
        replayed groups is ``replay_ratio`` (0.25 of 2 groups: one group every other step on
        average, not one every step). Whole groups are replayed, so GRPO's group structure is
        kept. The trainer asks once per step, with a generator seeded by the run's seed and
        the step, and passes the answer back as ``self._trainer.replay_slots``."""
        expected = self.replay_ratio * batch_size
        whole = math.floor(expected)
        return whole + int(rng.random() < expected - whole)

    def augment_batch(self, new_tasks: list[Any], current_domain: str) -> list[Any]:
        """The offered new tasks plus ``self._trainer.replay_slots`` replayed ones, once the
        earlier domains' buffers hold ``min_buffer_size`` records."""
        if self._trainer is None:
            return list(new_tasks)
        slots = self._trainer.replay_slots
        previous = self.previous_domains(current_domain)
        buffer = self._trainer.trajectory_buffer
        available = sum(buffer.size(d) for d in previous)
        if slots == 0 or not previous or available < max(self.min_buffer_size, 1):
            if slots and previous:
                self.skipped_replay_steps += 1
            return list(new_tasks)
        replay = self._sample_replay_tasks(previous, slots)
        for task in replay:
            domain = getattr(task, "domain", "unknown")
            self.replay_samples_per_domain[domain] = (
                self.replay_samples_per_domain.get(domain, 0) + 1
            )
        self.total_replay_samples += len(replay)
        return list(new_tasks) + replay

    def _sample_replay_tasks(self, previous_domains: list[str], num_samples: int) -> list[Any]:
        """Tasks to replay; override to customise (see ``docs/replay.md``)."""
        records = self._trainer.trajectory_buffer.sample(
            previous_domains, num_samples, self.replay_strategy
        )
        return [r.task for r in records]

    def warm_start_replay(self, domain: str, num_demos: int, rng: random.Random) -> dict[str, int]:
        """Earlier domains' demonstrations at the replay ratio: ``round(ratio / (1 - ratio) *
        num_demos)`` of them, in equal shares across the earlier domains (the remainder goes to
        domains drawn with ``rng``)."""
        previous = self.previous_domains(domain)
        wanted = round(self.replay_ratio / (1.0 - self.replay_ratio) * num_demos)
        if not previous or not wanted:
            return {}
        shares = [wanted // len(previous)] * len(previous)
        for i in rng.sample(range(len(previous)), wanted % len(previous)):
            shares[i] += 1
        return dict(zip(previous, shares, strict=True))

    # -- reporting ---------------------------------------------------------------------------
    def get_statistics(self) -> dict[str, Any]:
        buffer_sizes = self._trainer.trajectory_buffer.sizes() if self._trainer is not None else {}
        return {
            "algorithm": self.name,
            "total_replay_samples": self.total_replay_samples,
            "replay_samples_per_domain": dict(self.replay_samples_per_domain),
            "replay_ratio": self.replay_ratio,
            "replay_strategy": self.replay_strategy,
            "buffer_sizes": buffer_sizes,
            "skipped_replay_steps": self.skipped_replay_steps,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(replay_ratio={self.replay_ratio}, replay_strategy={self.replay_strategy!r}, "
            f"min_buffer_size={self.min_buffer_size}, replay_all_domains={self.replay_all_domains})"
        )
