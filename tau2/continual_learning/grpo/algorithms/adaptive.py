"""Adaptive replay: the replay ratio follows a forgetting signal from periodic probes."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from tau2.continual_learning.cl_algorithm import GRPO_ALGORITHMS
from tau2.continual_learning.grpo.algorithms.parameters import check, check_ratio_bounds
from tau2.continual_learning.grpo.algorithms.replay import ReplayCL

logger = logging.getLogger(__name__)


@GRPO_ALGORITHMS.register("adaptive_replay")
class AdaptiveReplayCL(ReplayCL):
    """Replay whose ratio follows a forgetting signal from periodic probes of earlier domains.

    Every ``probe_interval`` steps (default 1, so that in the default job's 3 steps per domain
    a probe acts on the later steps) the trainer scores ``probe_tasks`` validation tasks of
    each earlier domain: a fixed, seeded sample of its train tasks, never its test split, so
    the ratio is not tuned on the data the run is scored on. The drop of a domain is its
    reference score (its best probe score so far, starting from a probe right after it was
    trained) minus the probe score. If the largest drop exceeds ``forgetting_threshold`` the
    ratio rises by ``adaptation_rate``; once every drop is below half the threshold
    (recovered) it falls by ``adaptation_rate``; it always stays within
    ``[min_replay_ratio, max_replay_ratio]``. Every change is logged with its reason and kept
    in ``ratio_history``.
    """

    config_fields: ClassVar[dict[str, str]] = {
        "initial_replay_ratio": "replay_ratio",
        "probe_tasks": "probe_tasks_per_domain",
    }

    def __init__(
        self,
        initial_replay_ratio: float = 0.2,
        max_replay_ratio: float = 0.5,
        min_replay_ratio: float = 0.1,
        adaptation_rate: float = 0.1,
        forgetting_threshold: float = 0.1,
        replay_strategy: str = "random",
        min_buffer_size: int = 8,
        replay_all_domains: bool = True,
        probe_interval: int = 1,
        probe_tasks: int = 4,
    ) -> None:
        check_ratio_bounds(
            min_replay_ratio, max_replay_ratio, ("initial_replay_ratio", initial_replay_ratio)
        )
        check(
            adaptation_rate=adaptation_rate,
            forgetting_threshold=forgetting_threshold,
            probe_interval=probe_interval,
            probe_tasks=probe_tasks,
        )
        super().__init__(initial_replay_ratio, replay_strategy, min_buffer_size, replay_all_domains)
        self.initial_replay_ratio = float(initial_replay_ratio)
        self.max_replay_ratio = float(max_replay_ratio)
        self.min_replay_ratio = float(min_replay_ratio)
        self.adaptation_rate = float(adaptation_rate)
        self.forgetting_threshold = float(forgetting_threshold)
        self.probe_interval = int(probe_interval)
        self.probe_tasks = int(probe_tasks)
        self.reference_scores: dict[str, float] = {}
        self.ratio_history: list[dict[str, Any]] = []
        self.steps_in_domain = 0

    def pre_task_hook(self, trainer: Any, domain: str) -> None:
        self.steps_in_domain = 0

    def post_step_hook(self, trainer: Any, domain: str) -> None:
        self.steps_in_domain += 1
        previous = self.previous_domains(domain)
        if not previous or self.steps_in_domain % self.probe_interval:
            return
        scores = trainer.probe(previous, self.probe_tasks)
        self.observe_probe_scores(scores, step=trainer.global_step)

    def post_task_hook(self, trainer: Any, domain: str) -> None:
        """A probe of the domain right after its training becomes its first reference."""
        score = trainer.probe([domain], self.probe_tasks)[domain]
        self.reference_scores[domain] = max(self.reference_scores.get(domain, score), score)

    def observe_probe_scores(self, scores: dict[str, float], step: int = 0) -> float:
        """Update the ratio from probe ``scores`` of earlier domains; returns the new ratio."""
        drops = {}
        for domain, score in scores.items():
            reference = self.reference_scores.setdefault(domain, score)
            drops[domain] = reference - score
            self.reference_scores[domain] = max(reference, score)
        if not drops:
            return self.replay_ratio
        worst_domain, worst = max(drops.items(), key=lambda kv: kv[1])
        old = self.replay_ratio
        if worst > self.forgetting_threshold:
            new = min(self.max_replay_ratio, old + self.adaptation_rate)
            reason = f"forgetting on {worst_domain}: drop {worst:.3f} > threshold {self.forgetting_threshold}"
        elif worst < self.forgetting_threshold / 2:
            new = max(self.min_replay_ratio, old - self.adaptation_rate)
            reason = f"recovered: largest drop {worst:.3f} < {self.forgetting_threshold / 2:.3f}"
        else:
            return old
        new = round(new, 10)
        if new != old:
            self.replay_ratio = new
            self.ratio_history.append(
                {"step": step, "old": old, "new": new, "reason": reason, "drops": drops}
            )
            logger.info("Adaptive replay ratio %.2f -> %.2f (%s)", old, new, reason)
        return self.replay_ratio

    def get_statistics(self) -> dict[str, Any]:
        stats = super().get_statistics()
        stats.update(
            {
                "initial_replay_ratio": self.initial_replay_ratio,
                "min_replay_ratio": self.min_replay_ratio,
                "max_replay_ratio": self.max_replay_ratio,
                "ratio_history": list(self.ratio_history),
                "reference_scores": dict(self.reference_scores),
            }
        )
        return stats
