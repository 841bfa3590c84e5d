"""Continual-learning algorithms for the GRPO trainer: sequential, replay, adaptive replay.

``CLAlgorithm`` (the plugin interface) lives in :mod:`tau2.continual_learning.cl_algorithm` and
is re-exported here, so users write ``from tau2.continual_learning.continual_learning import
CLAlgorithm, ReplayCL, AdaptiveReplayCL``.

Batch composition (DESIGN.md section 4): the trainer asks :meth:`CLAlgorithm.num_replay_slots`
how many of a step's ``B`` task groups are reserved for replay, hands ``augment_batch`` the
``B - slots`` new tasks, and tops the result up with new tasks when the algorithm could not fill
its slots (buffer below ``min_buffer_size``). A replayed task gets ``num_generations`` fresh
rollouts like any other, so GRPO's group structure is kept.
"""

from __future__ import annotations

import logging
from typing import Any

from tau2.continual_learning.cl_algorithm import (
    CLAlgorithm,
    available_cl_algorithms,
    get_cl_algorithm_class,
    register_cl_algorithm,
)

__all__ = [
    "CLEARCL",
    "AdaptiveReplayCL",
    "CLAlgorithm",
    "ReplayCL",
    "SequentialCL",
    "available_cl_algorithms",
    "get_cl_algorithm_class",
    "register_cl_algorithm",
]

logger = logging.getLogger(__name__)


@register_cl_algorithm("sequential")
class SequentialCL(CLAlgorithm):
    """No replay: domains are trained one after another (the forgetting baseline)."""


@register_cl_algorithm("replay")
class ReplayCL(CLAlgorithm):
    """Experience replay: a fixed share of every batch is tasks from earlier domains.

    Args:
        replay_ratio: share of each step's task groups that are replayed tasks, in [0, 1).
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
        from tau2.continual_learning.buffer import SAMPLING_STRATEGIES

        if not 0.0 <= replay_ratio < 1.0:
            raise ValueError(f"replay_ratio={replay_ratio!r} must be in [0, 1)")
        if replay_strategy not in SAMPLING_STRATEGIES:
            raise ValueError(
                f"replay_strategy={replay_strategy!r} is unknown; valid: {', '.join(SAMPLING_STRATEGIES)}"
            )
        if min_buffer_size < 0:
            raise ValueError(f"min_buffer_size={min_buffer_size!r} must be >= 0")
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

    def augment_batch(self, new_tasks: list[Any], current_domain: str) -> list[Any]:
        if self._trainer is None:
            return list(new_tasks)
        slots = self.num_replay_slots(self._trainer.current_batch_size)
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
        """Tasks to replay; override to customise (see docs/algorithms.md)."""
        records = self._trainer.trajectory_buffer.sample(
            previous_domains, num_samples, self.replay_strategy
        )
        return [r.task for r in records]

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


@register_cl_algorithm("adaptive_replay")
class AdaptiveReplayCL(ReplayCL):
    """Replay whose ratio follows a forgetting signal from periodic probes of earlier domains.

    Every ``probe_interval`` steps the trainer scores ``probe_tasks`` test tasks of each earlier
    domain. The drop of a domain is its reference score (its best score so far, starting from
    the accuracy right after it was trained) minus the probe score. If the largest drop exceeds
    ``forgetting_threshold`` the ratio rises by ``adaptation_rate``; once every drop is below half
    the threshold (recovered) it falls by ``adaptation_rate``; it always stays within
    ``[min_replay_ratio, max_replay_ratio]``. Every change is logged with its reason and kept in
    ``ratio_history``.
    """

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
        probe_interval: int = 4,
        probe_tasks: int = 4,
    ) -> None:
        if not 0.0 <= min_replay_ratio <= max_replay_ratio < 1.0:
            raise ValueError(
                f"need 0 <= min_replay_ratio ({min_replay_ratio}) <= max_replay_ratio ({max_replay_ratio}) < 1"
            )
        if not min_replay_ratio <= initial_replay_ratio <= max_replay_ratio:
            raise ValueError(
                f"initial_replay_ratio={initial_replay_ratio} must lie in [{min_replay_ratio}, {max_replay_ratio}]"
            )
        if not 0.0 < adaptation_rate <= 1.0 or not 0.0 < forgetting_threshold <= 1.0:
            raise ValueError("adaptation_rate and forgetting_threshold must be in (0, 1]")
        if probe_interval < 1 or probe_tasks < 1:
            raise ValueError("probe_interval and probe_tasks must be >= 1")
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
        self.observe_probe_scores(
            scores, step=getattr(trainer, "global_step", self.steps_in_domain)
        )

    def post_task_hook(self, trainer: Any, domain: str) -> None:
        """The score right after training a domain becomes its first reference."""
        score = trainer.latest_scores().get(domain)
        if score is not None:
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


@register_cl_algorithm("clear")
class CLEARCL(ReplayCL):
    """CLEAR for GRPO (Rolnick et al. 2019): replay plus behaviour cloning on stored trajectories.

    Besides replaying earlier tasks like :class:`ReplayCL`, every optimisation step samples
    ``bc_batch_size`` stored trajectories of earlier domains, with the token ids and sampling
    log-probs recorded when they were generated (the behaviour policy), and adds
    ``bc_weight * KL(behaviour || current)`` over their model-written tokens to TRL's loss. The
    KL uses the non-negative per-token estimator ``exp(d) - d - 1`` with ``d = log pi - log b``,
    whose gradient pulls the current policy back towards what it did on earlier domains.
    """

    def __init__(
        self,
        replay_ratio: float = 0.25,
        replay_strategy: str = "random",
        min_buffer_size: int = 8,
        replay_all_domains: bool = True,
        bc_weight: float = 0.1,
        bc_batch_size: int = 2,
    ) -> None:
        super().__init__(replay_ratio, replay_strategy, min_buffer_size, replay_all_domains)
        if bc_weight < 0:
            raise ValueError(f"bc_weight={bc_weight!r} must be >= 0")
        if bc_batch_size < 1:
            raise ValueError(f"bc_batch_size={bc_batch_size!r} must be >= 1")
        self.bc_weight = float(bc_weight)
        self.bc_batch_size = int(bc_batch_size)
        self.bc_steps = 0
        self.last_bc_loss: float | None = None

    def extra_loss(self, model: Any, batch: Any, current_domain: str) -> Any | None:
        if self._trainer is None or self.bc_weight == 0:
            return None
        previous = self.previous_domains(current_domain)
        records = [
            r
            for r in self._trainer.trajectory_buffer.sample(
                previous, self.bc_batch_size, self.replay_strategy
            )
            if r.completion_ids and any(r.env_mask)
        ]
        if not records:
            return None
        loss = self.bc_weight * behaviour_kl(model, records, self._trainer.tokenizer.pad_token_id)
        self.bc_steps += 1
        self.last_bc_loss = float(loss.detach())
        return loss

    def get_statistics(self) -> dict[str, Any]:
        stats = super().get_statistics()
        stats.update(
            {
                "bc_weight": self.bc_weight,
                "bc_steps": self.bc_steps,
                "last_bc_loss": self.last_bc_loss,
            }
        )
        return stats


def behaviour_kl(model: Any, records: list[Any], pad_id: int) -> Any:
    """Mean per-token ``KL(behaviour || model)`` estimate over the model-written tokens of
    stored trajectories (right-padded into one batch)."""
    import torch

    device = next(model.parameters()).device
    sequences = [list(r.prompt_ids) + list(r.completion_ids) for r in records]
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(records), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(records), width), dtype=torch.long)
    mask = torch.zeros((len(records), width), dtype=torch.float32)
    behaviour = torch.zeros((len(records), width), dtype=torch.float32)
    for i, (record, seq) in enumerate(zip(records, sequences, strict=True)):
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attention[i, : len(seq)] = 1
        start = len(record.prompt_ids)
        end = start + len(record.completion_ids)
        mask[i, start:end] = torch.tensor(record.env_mask, dtype=torch.float32)
        behaviour[i, start:end] = torch.tensor(record.logprobs, dtype=torch.float32)
    input_ids, attention, mask, behaviour = (
        t.to(device) for t in (input_ids, attention, mask, behaviour)
    )
    logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    delta = logp - behaviour[:, 1:]
    per_token = torch.exp(delta) - delta - 1.0
    token_mask = mask[:, 1:]
    return (per_token * token_mask).sum() / token_mask.sum().clamp(min=1.0)
