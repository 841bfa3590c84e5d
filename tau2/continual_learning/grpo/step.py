"""One GRPO step's episodes: TRL's ``rollout_func`` of a continual run.

:meth:`GRPOStep.run`, top to bottom:

1. the step's new tasks of the current domain: TRL's sampler picked them (``prompts`` are task
   keys), unless the pass-rate curriculum (``curriculum="pass_rate"``;
   :mod:`~tau2.continual_learning.grpo.curriculum`) chooses them instead, informative tasks
   first;
2. :func:`~tau2.continual_learning.grpo.batch.compose_batch` mixes in the algorithm's replayed
   tasks (the replay slots, ``replay_ratio x B`` rounded stochastically with the step's seed,
   are computed once, here, and told to the algorithm through its view);
3. every task gets ``num_samples_per_prompt`` episodes (one group), tau2's evaluators give the
   rewards;
4. dynamic sampling replaces zero-variance groups of new tasks with fresh ones
   (``dynamic_sampling_max_extra_groups``; :mod:`~tau2.continual_learning.grpo.learning_signal`);
5. the current domain's episodes go into the trajectory buffer and the curriculum;
6. guided groups put a known success into all-fail groups (``guided_groups``);
7. the step's statistics are recorded once, and TRL gets the token fields and the training
   rewards: tau2's reward, plus ``partial_credit_weight x``
   :func:`~tau2.continual_learning.rollout.partial_credit.partial_credit` when that weight is
   set (TRL then computes advantages and the loss). Everything else (statistics, buffer,
   curriculum, guided groups, evaluation) keeps tau2's binary reward.

TRL's own per-step metrics (policy entropy, clip fractions) join the step's statistics when TRL
logs them (:meth:`~tau2.continual_learning.grpo.record.RunRecord.add_trl_log`).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import Any

from accelerate import PartialState
from accelerate.utils import gather_object

from tau2.continual_learning.cl_algorithm import CLAlgorithm
from tau2.continual_learning.grpo.batch import compose_batch, replay_slots
from tau2.continual_learning.grpo.config import GRPOConfig
from tau2.continual_learning.grpo.curriculum import PassRateCurriculum
from tau2.continual_learning.grpo.learning_signal import (
    Group,
    RefillResult,
    groups_of,
    guide_failed_groups,
    is_informative,
    refill_uninformative,
)
from tau2.continual_learning.grpo.record import RunRecord
from tau2.continual_learning.grpo.rollouts import Rollouts
from tau2.continual_learning.grpo.seeds import Seeds
from tau2.continual_learning.grpo.trajectory_buffer import TrajectoryBuffer
from tau2.continual_learning.grpo.trl_trainer import REWARD_FIELD
from tau2.continual_learning.grpo.warm_start import gold_demonstrations
from tau2.continual_learning.rollout import DomainTask, Episode
from tau2.continual_learning.rollout.partial_credit import partial_credit

__all__ = ["GRPOStep", "step_statistics"]


def step_statistics(
    groups: Sequence[Group], domain: str, step: int, sampled: Sequence[Group] | None = None
) -> dict[str, Any]:
    """One step's training signal: mean reward, and how many GRPO groups are *informative*
    (rewards not all equal; a group of equal rewards has zero advantage and gives TRL's loss no
    gradient), of the groups trained on and, when given, of those first ``sampled``."""
    episodes = [e for g in groups for e in g]
    informative = sum(is_informative(g) for g in groups)
    stats: dict[str, Any] = {
        "domain": domain,
        "global_step": step,
        "reward_mean": sum(e.reward for e in episodes) / len(episodes) if episodes else 0.0,
        "groups": len(groups),
        "informative_groups": informative,
        "informative_share": informative / len(groups) if groups else 0.0,
    }
    if sampled is not None:
        share = sum(is_informative(g) for g in sampled) / len(sampled) if sampled else 0.0
        stats["informative_share_sampled"] = share
    return stats


class GRPOStep:
    """The episodes of each GRPO step of a run (see the module docstring)."""

    def __init__(
        self,
        config: GRPOConfig,
        rollouts: Rollouts,
        tokenizer: Any,
        record: RunRecord,
        seeds: Seeds,
    ) -> None:
        self.config = config
        self.rollouts = rollouts
        self.tokenizer = tokenizer
        self.record = record
        self.seeds = seeds
        process = PartialState()
        self.rank, self.num_processes = process.process_index, process.num_processes
        self.replay_slots = 0
        """Task groups of the step being composed that are offered for replay."""
        self.curriculum = (
            PassRateCurriculum(seeds.curriculum(), window=config.num_samples_per_prompt)
            if config.curriculum == "pass_rate"
            else None
        )
        """The run's pass-rate curriculum (``curriculum="pass_rate"``), else ``None``; its
        state is part of the run's checkpoints. A task's rate is its latest group's (the
        window is the group size): a task the policy has come to solve every time leaves the
        informative tier instead of being drawn again and again on its old failures."""
        self._gold: dict[str, Episode | None] = {}

    def compose_batch(
        self, new_tasks: list[DomainTask], domain: str, algorithm: CLAlgorithm
    ) -> list[DomainTask]:
        """The step's task groups from its new tasks and the algorithm's replay."""
        rng = random.Random(self.seeds.replay(self.record.global_step, self.rank))
        self.replay_slots = replay_slots(algorithm, len(new_tasks), rng)
        return compose_batch(algorithm, new_tasks, domain, self.replay_slots)

    def new_tasks(self, keys: list[str], domain: str) -> list[DomainTask]:
        """The step's ``len(keys)`` new tasks: those TRL's sampler picked (``keys``), or the
        curriculum's choice. Under torchrun the curriculum (the same on every rank) chooses
        for all ranks at once and each rank takes its share."""
        train = self.rollouts.tasks(domain, "train")
        if self.curriculum is None:
            by_key = {t.key: t for t in train}
            return [by_key[k] for k in keys]
        count = len(keys)
        chosen = self.curriculum.choose(train, count * self.num_processes, self.record.global_step)
        chosen = list(itertools.islice(itertools.cycle(chosen), count * self.num_processes))
        return chosen[self.rank * count : (self.rank + 1) * count]

    def _record_in_curriculum(self, episodes: list[Any], domain: str) -> None:
        """The tau2 rewards of the step's episodes of ``domain``, every rank's (so each rank's
        curriculum stays the same)."""
        outcomes = [(e.task.key, float(e.reward)) for e in episodes if e.task.domain == domain]
        if self.num_processes > 1:
            outcomes = gather_object(outcomes)
        for key, reward in outcomes:
            self.curriculum.record(key, reward)

    def training_rewards(self, episodes: Sequence[Any]) -> list[float]:
        """What TRL trains on: tau2's reward, plus ``partial_credit_weight x`` the episode's
        partial credit when that weight is set (a guided group's known success scores 1)."""
        weight = self.config.partial_credit_weight
        if not weight:
            return [float(e.reward) for e in episodes]
        return [float(e.reward) + weight * partial_credit(e) for e in episodes]

    def run(
        self, prompts: list[str], domain: str, algorithm: CLAlgorithm, buffer: TrajectoryBuffer
    ) -> dict[str, list[Any]]:
        """TRL's ``rollout_func``: ``prompts`` are task keys, each repeated
        ``num_samples_per_prompt`` times; returns TRL's token fields plus the tau2 rewards."""
        cfg = self.config
        size = cfg.num_samples_per_prompt
        step = self.record.global_step
        keys = list(dict.fromkeys(prompts[i] for i in range(0, len(prompts), size)))
        extra: dict[str, Any] = {}
        if self.curriculum is not None:
            train = self.rollouts.tasks(domain, "train")
            counts = self.curriculum.tier_counts(train)
            extra.update({f"curriculum_{tier}": n for tier, n in counts.items()})
        new_tasks = self.new_tasks(keys, domain)
        tasks = self.compose_batch(new_tasks, domain, algorithm)
        seed = self.seeds.rollouts(step, self.rank)
        sampled = groups_of(self.rollouts.run(tasks, size, cfg.temperature, seed), size)
        groups = sampled
        if cfg.dynamic_sampling_max_extra_groups:
            refill = self._refill(sampled, tasks, new_tasks, domain)
            groups = refill.groups
            extra.update(extra_groups=refill.extra_groups, replaced_groups=refill.replaced)
        for episode in (e for g in groups for e in g):
            if episode.task.domain == domain:
                buffer.add_episode(episode, step=step)
        if self.curriculum is not None:
            seen = {id(e): e for g in (*sampled, *groups) for e in g}
            self._record_in_curriculum(list(seen.values()), domain)
        if cfg.guided_groups:
            groups, extra["guided_groups"] = guide_failed_groups(
                groups, lambda group: self._known_success(group, buffer)
            )
        episodes = [e for g in groups for e in g]
        rewards = self.training_rewards(episodes)
        if cfg.partial_credit_weight:
            extra["training_reward_mean"] = sum(rewards) / len(rewards) if rewards else 0.0
        self.record.step_stats.append({**step_statistics(groups, domain, step, sampled), **extra})
        eos = self.tokenizer.eos_token_id
        return {
            "prompt_ids": [e.prompt_ids for e in episodes],
            "completion_ids": [e.completion_ids or [eos] for e in episodes],
            "logprobs": [e.logprobs or [0.0] for e in episodes],
            "env_mask": [e.env_mask or [0] for e in episodes],
            REWARD_FIELD: rewards,
        }

    def _refill(
        self, groups: list[Group], tasks: list[DomainTask], new: list[DomainTask], domain: str
    ) -> RefillResult:
        """Dynamic sampling: zero-variance groups of the step's new tasks replaced by fresh
        groups of the domain's other train tasks (seeded order), within the step's budget."""
        cfg = self.config
        step, size = self.record.global_step, cfg.num_samples_per_prompt
        new_keys = {t.key for t in new}
        in_batch = {t.key for t in tasks}
        pool = [t for t in self.rollouts.tasks(domain, "train") if t.key not in in_batch]
        random.Random(self.seeds.refill(step, self.rank, 0)).shuffle(pool)
        draws = iter(range(1, 1 << 30))

        def sample_groups(n: int) -> list[Group]:
            chosen, pool[:] = pool[:n], pool[n:]
            if not chosen:
                return []
            seed = self.seeds.refill(step, self.rank, next(draws))
            return groups_of(self.rollouts.run(chosen, size, cfg.temperature, seed), size)

        replaceable = [t.key in new_keys for t in tasks]
        return refill_uninformative(
            groups, replaceable, sample_groups, cfg.dynamic_sampling_max_extra_groups
        )

    def _known_success(self, group: Group, buffer: TrajectoryBuffer) -> Any | None:
        """A success of the group's task: the latest stored one, else its gold demonstration."""
        task = group[0].task
        stored = [
            r
            for r in buffer.records(task.domain)
            if r.reward == 1.0 and r.task.key == task.key and r.completion_ids
        ]
        if stored:
            return max(stored, key=lambda r: r.order)
        if task.key not in self._gold:
            demos = gold_demonstrations(
                [task],
                self.tokenizer,
                max_context_tokens=self.rollouts.max_context_tokens,
                assistant_prefix=self.config.assistant_prefix,
                max_tool_response_chars=self.config.max_tool_response_chars or None,
            )
            self._gold[task.key] = demos.episodes[0] if demos.episodes else None
        return self._gold[task.key]
