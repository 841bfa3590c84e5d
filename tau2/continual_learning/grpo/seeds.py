"""Every seed a continual run derives from ``config.seed``, in one place.

Each purpose gets its own stream, so that drawing more in one (a refill, another demonstration)
never shifts another, and a run is reproduced exactly from its config and a checkpoint:

* :meth:`Seeds.rollouts`: a GRPO step's episodes, per global step and process;
* :meth:`Seeds.refill`: the fresh groups of dynamic sampling, per draw within a step;
* :meth:`Seeds.evaluation`: scoring a policy (evaluation rows, probes, the warm-start guard): the
  same seed every time, so two scorings of the same weights agree;
* :meth:`Seeds.warm_start`: a domain's demonstration choice, replay draw and batch order;
* :meth:`Seeds.replay`: a step's replay-slot draw (the stochastic rounding of
  ``replay_ratio x B``), per global step and process;
* :meth:`Seeds.curriculum`: the pass-rate curriculum's within-tier shuffles;
* :meth:`Seeds.validation`: which train tasks of a domain form its validation split.

The multipliers are primes far apart, so that nearby base seeds, steps and domains do not land
on the same stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class WarmStartDraw(IntEnum):
    """The seeded draws of one domain's warm start."""

    DEMONSTRATIONS = 1
    """Which train tasks become demonstrations."""
    REPLAY = 2
    """Which earlier domains' demonstrations are mixed in."""
    ORDER = 3
    """The order of the supervised batches."""


@dataclass(frozen=True)
class Seeds:
    """The seeds of a run with base seed ``base`` (``config.seed``)."""

    base: int

    def rollouts(self, global_step: int, rank: int) -> int:
        """The episodes of GRPO step ``global_step`` on process ``rank``."""
        return self.base * 100_003 + global_step * 1_009 + rank

    def refill(self, global_step: int, rank: int, draw: int) -> int:
        """Dynamic sampling's ``draw``-th batch of fresh groups (1, 2, ...) within a step; its
        task order uses ``draw=0``."""
        return self.rollouts(global_step, rank) + 7_919 * draw

    def evaluation(self) -> int:
        """Scoring episodes (greedy by default; the seed matters at ``eval_temperature > 0``)."""
        return self.base + 7

    def warm_start(self, domain_index: int, draw: WarmStartDraw) -> int:
        """Draw ``draw`` of the warm start of the domain at ``domain_index`` (0-based)."""
        return self.base * 1_000_003 + (domain_index + 1) * 7_919 + int(draw)

    def replay(self, global_step: int, rank: int) -> int:
        """The replay-slot draw of GRPO step ``global_step`` on process ``rank``."""
        return self.base * 300_007 + global_step * 2_003 + rank

    def curriculum(self) -> int:
        """The pass-rate curriculum (its shuffles are seeded by this and the step)."""
        return self.base * 400_009 + 11

    def validation(self, domain: str) -> str:
        """The order of ``domain``'s train tasks whose head is its validation split (a string
        seed: ``random.Random`` hashes it the same way in every process)."""
        return f"validation:{self.base}:{domain}"
