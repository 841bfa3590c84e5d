"""``GRPOTrainer``: continual GRPO over a sequence of tau2 domains.

The domain loop, top to bottom (:meth:`GRPOTrainer.train`):

1. before the first domain, the untrained model is scored on every domain (the FWT baseline);
2. for each domain: ``cl_algorithm.pre_task_hook``, the supervised warm start on gold
   demonstrations when ``warm_start_demos_per_domain > 0``
   (:mod:`~tau2.continual_learning.grpo.warm_start`), then ``max_steps_per_domain`` GRPO steps
   run by TRL's engine (:mod:`~tau2.continual_learning.grpo.engine`). Each step's rollouts enter
   through TRL's ``rollout_func`` (:meth:`GRPOTrainer.rollout`): the step's new tasks and the
   algorithm's replayed ones (:func:`~tau2.continual_learning.grpo.batch.compose_batch`) get
   ``num_samples_per_prompt`` episodes each, tau2's evaluators give the rewards, finished
   episodes go into the trajectory buffer, and TRL computes advantages and the loss;
3. every domain's test split is scored: one row of the accuracy matrix;
4. ``cl_algorithm.post_task_hook``, the statistics banner, a checkpoint, the outputs.

One optimizer (and its state) is kept across domains unless
``reset_optimizer_between_domains``; the learning-rate schedule restarts per domain.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from tqdm.auto import tqdm
from transformers import set_seed

from tau2.continual_learning.cl_algorithm import CLAlgorithm
from tau2.continual_learning.grpo.algorithms import GRPO_ALGORITHMS
from tau2.continual_learning.grpo.batch import compose_batch
from tau2.continual_learning.grpo.checkpointing import (
    OPTIMIZER_FILE,
    STATE_FILE,
    Checkpointer,
    load_weights,
    rng_state,
    set_rng_state,
)
from tau2.continual_learning.grpo.config import GRPOConfig
from tau2.continual_learning.grpo.engine import (
    REWARD_FIELD,
    Engine,
    LossGuard,
    NonFiniteLossError,
    StepCallback,
    tau2_reward,
)
from tau2.continual_learning.grpo.evaluation import Score, pass_at_one, step_statistics
from tau2.continual_learning.grpo.learning_signal import (
    RefillResult,
    guide_failed_groups,
    refill_uninformative,
)
from tau2.continual_learning.grpo.rollouts import Rollouts
from tau2.continual_learning.grpo.trajectory_buffer import TrajectoryBuffer
from tau2.continual_learning.grpo.warm_start import WarmStart, gold_demonstrations
from tau2.continual_learning.grpo.warm_start_guard import WarmStartGuard
from tau2.continual_learning.metrics import bootstrap_cl_intervals, compute_cl_metrics
from tau2.continual_learning.model_loading import load_model_and_tokenizer, wrap_lora
from tau2.continual_learning.report import (
    peak_rss_mb,
    statistics_banner,
    write_json_atomic,
    write_rows_csv,
    write_run_report,
)
from tau2.continual_learning.rollout import DomainTask, Episode

logger = logging.getLogger(__name__)

__all__ = ["GRPOTrainer", "NonFiniteLossError", "build_cl_algorithm"]


def build_cl_algorithm(config: GRPOConfig) -> CLAlgorithm:
    """Instantiate ``config.cl_algorithm`` from the config's flat fields (each algorithm
    validates its own parameters)."""
    return GRPO_ALGORITHMS.get(config.cl_algorithm).from_config(config)


class GRPOTrainer:
    """Continual GRPO over a sequence of tau2 domains (see the module docstring).

    ``trainer.cl_algorithm`` may be replaced by any :class:`CLAlgorithm` instance before
    :meth:`train`. ``model``/``tokenizer`` may be passed to skip loading
    ``config.model_name_or_path``. ``baseline`` and ``baseline_rewards`` (the untrained scores
    and per-task rewards) may be set before :meth:`train` to reuse another run's with the same
    model, seed and domains; :meth:`train` then does not score the untrained model again.

    **What a GRPO algorithm may use** (``self._trainer`` after :meth:`CLAlgorithm.attach`, or
    the ``trainer`` argument of the hooks); everything else is internal:

    - ``domains``: the domain sequence; ``current_domain``; ``domain_index`` (0-based);
    - ``global_step``: optimizer steps so far, over all domains;
    - ``current_batch_size``: task groups of the step being composed (``augment_batch``);
    - ``trajectory_buffer``: finished episodes per domain
      (:class:`~tau2.continual_learning.grpo.trajectory_buffer.TrajectoryBuffer`: ``sample``,
      ``size``, ``sizes``, ``records``);
    - ``probe(domains, num_tasks)``: quick test scores of some domains now;
    - ``latest_scores()``: the last accuracy-matrix row as ``{domain: score}``;
    - ``tokenizer`` and ``model`` (for an ``extra_loss``); ``config`` (read only).
    """

    def __init__(
        self,
        config: GRPOConfig | None = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        cl_algorithm: CLAlgorithm | None = None,
    ) -> None:
        self.config = cfg = config if config is not None else GRPOConfig()
        set_seed(cfg.seed)
        if model is None:
            model, loaded_tokenizer = load_model_and_tokenizer(cfg.model_name_or_path)
            tokenizer = tokenizer or loaded_tokenizer
        elif tokenizer is None:
            raise ValueError("GRPOTrainer: pass tokenizer= together with model=")
        if cfg.use_peft:
            model = wrap_lora(
                model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules
            )
        self.model = model
        self.tokenizer = tokenizer
        self.process = PartialState()
        self.trajectory_buffer = TrajectoryBuffer(
            cfg.replay_buffer_size, cfg.buffer_insertion_policy, cfg.seed
        )
        self._cl_algorithm: CLAlgorithm | None = None
        self.cl_algorithm = cl_algorithm if cl_algorithm is not None else build_cl_algorithm(cfg)
        self.rollouts = Rollouts(cfg, model, tokenizer)
        self.warm_start = WarmStart(cfg, tokenizer)
        self.warm_start_guard = WarmStartGuard(
            cfg.warm_start_guard_tasks, cfg.warm_start_guard_retries
        )
        self.warm_start_stats: dict[str, dict[str, Any]] = {}
        """Per domain, what its warm start did (demos, replayed demos, tokens, loss, seconds)."""
        self.checkpointer = Checkpointer(self)
        self.loss_guard = LossGuard(cfg.max_consecutive_nonfinite_losses)
        self.baseline: list[float] = []
        self.accuracy_matrix: list[list[float]] = []
        self.score_intervals: list[list[dict[str, float | int]]] = []
        """Per accuracy-matrix row, each domain's pass^1 with its 95% interval."""
        self.baseline_rewards: list[list[float]] = []
        self.eval_rewards: list[list[list[float]]] = []
        """Per row and domain, each test task's reward (bootstrap intervals of ACC etc.)."""
        self.step_stats: list[dict[str, Any]] = []
        """Per optimizer step: domain, global step, mean reward, informative-group share."""
        self.log_rows: list[dict[str, Any]] = []
        """TRL's log history of every finished domain, tagged with domain and global step."""
        self.passes_without_signal = 0
        """Training micro-batches whose advantages were all zero (no forward/backward run)."""
        self.global_step = 0
        self.domain_index = 0
        self.current_domain = cfg.domains[0]
        self.current_batch_size = cfg.batch_size_per_gpu
        self.optimizer: torch.optim.Optimizer | None = None
        self.wall_time_s = 0.0
        self.last_eval_episodes: dict[str, list[Episode]] = {}
        """The latest evaluation's episodes per domain (for inspection and reports)."""
        self._domain_start_step = 0
        self._gold: dict[str, Episode | None] = {}
        self._pending_optimizer_state: dict[str, Any] | None = None
        self._resume_engine_checkpoint: str | None = None
        self._restored = False

    # -- the plugin contract ------------------------------------------------------------------
    @property
    def domains(self) -> list[str]:
        return list(self.config.domains)

    @property
    def cl_algorithm(self) -> CLAlgorithm:
        assert self._cl_algorithm is not None
        return self._cl_algorithm

    @cl_algorithm.setter
    def cl_algorithm(self, algorithm: CLAlgorithm) -> None:
        if not isinstance(algorithm, CLAlgorithm):
            raise TypeError(
                f"cl_algorithm must be a CLAlgorithm instance, got {type(algorithm).__name__}"
            )
        algorithm.attach(self)
        self._cl_algorithm = algorithm

    @property
    def is_main_process(self) -> bool:
        return self.process.is_main_process

    def tasks(self, domain: str, split: str) -> list[DomainTask]:
        """Train or test tasks of ``domain`` as this run uses them."""
        return self.rollouts.tasks(domain, split)

    def probe(self, domains: list[str], num_tasks: int) -> dict[str, float]:
        """Quick scores on the first ``num_tasks`` test tasks of ``domains``."""
        return {d: self.evaluate_domain(d, limit=num_tasks).mean for d in domains}

    def latest_scores(self) -> dict[str, float]:
        """The last accuracy-matrix row as ``{domain: score}``."""
        if not self.accuracy_matrix:
            return {}
        return dict(zip(self.config.domains, self.accuracy_matrix[-1], strict=False))

    @property
    def nonfinite_losses(self) -> int:
        """Updates skipped so far because their loss was NaN/inf."""
        return self.loss_guard.skipped

    def where(self) -> str:
        """Where training is, for messages."""
        return f"at step {self.global_step} on {self.current_domain!r}"

    def close(self) -> None:
        """Release the sampling engine (a vLLM engine's memory and process group); the trainer
        cannot sample afterwards. The command-line job calls it when the run ends."""
        self.rollouts.close()

    # -- the run --------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Train through every domain; returns (and writes) the metrics. A config's
        ``resume_from_checkpoint`` or ``branch_from_checkpoint`` is loaded first unless
        :meth:`load_checkpoint` already ran."""
        cfg = self.config
        if not self._restored and cfg.resume_from_checkpoint:
            self.load_checkpoint(cfg.resume_from_checkpoint)
        elif not self._restored and cfg.branch_from_checkpoint:
            self.load_checkpoint(cfg.branch_from_checkpoint, branch=True)
        start = time.perf_counter()
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        if not self.baseline:
            scores = self.evaluate_all("baseline")
            self.baseline = [s.mean for s in scores]
            self.baseline_rewards = [list(s.rewards) for s in scores]
            logger.info(
                "Baseline (untrained): %s", dict(zip(cfg.domains, self.baseline, strict=True))
            )
        for index in range(self.domain_index, len(cfg.domains)):
            domain = self.current_domain = cfg.domains[index]
            logger.info("=== Domain %d/%d: %s ===", index + 1, len(cfg.domains), domain)
            if self._resume_engine_checkpoint is None:  # a mid-domain resume already ran it
                self.cl_algorithm.pre_task_hook(self, domain)
                self._domain_start_step = self.global_step
                if self.warm_start.enabled:
                    self._warm_start(domain)
            if cfg.max_steps_per_domain:  # 0: warm start only
                self._train_domain(domain)
            scores = self.evaluate_all(f"eval after {domain}")
            self.accuracy_matrix.append([s.mean for s in scores])
            self.score_intervals.append([s.as_dict() for s in scores])
            self.eval_rewards.append([list(s.rewards) for s in scores])
            logger.info("Scores after %s: %s", domain, self.latest_scores())
            self.cl_algorithm.post_task_hook(self, domain)
            logger.info("\n%s", statistics_banner(domain, self.cl_algorithm.get_statistics()))
            self.domain_index = index + 1
            self.wall_time_s += time.perf_counter() - start
            start = time.perf_counter()
            self._write_rank_summary()
            self.checkpointer.save_domain_end(final=self.domain_index == len(cfg.domains))
            if self.is_main_process:
                self.write_outputs()
        return self.metrics()

    def _warm_start(self, domain: str) -> None:
        """Supervised steps on ``domain``'s gold demonstrations (plus replayed ones), under
        the warm-start guard when it is on."""
        cfg = self.config

        def warm_start(learning_rate: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            return self.warm_start.run(
                self.model,
                domain,
                self.domain_index,
                lambda d: self.tasks(d, "train"),
                self.cl_algorithm,
                learning_rate=learning_rate,
            )

        demos = self.warm_start.demonstrations(domain, self.tasks(domain, "train")).episodes
        checked = [e.task for e in demos[: self.warm_start_guard.tasks]]
        if checked:
            stats, rows = self.warm_start_guard.run(
                self.model,
                warm_start,
                lambda: self.score_tasks(checked).mean,
                cfg.warm_start_learning_rate,
                domain,
            )
        else:
            stats, rows = warm_start(cfg.warm_start_learning_rate)
        self.warm_start_stats[domain] = stats
        self.log_rows += [
            {"domain": domain, "global_step": self.global_step, "phase": "warm_start", **row}
            for row in rows
        ]

    def _train_domain(self, domain: str) -> None:
        from datasets import Dataset

        cfg = self.config
        if cfg.reset_optimizer_between_domains and self._resume_engine_checkpoint is None:
            self.optimizer = None
            self._pending_optimizer_state = None
        folder = self.checkpointer.domain_folder(self.domain_index, domain)
        callback = StepCallback(self)
        engine = Engine(
            model=self.model,
            reward_funcs=[tau2_reward],
            args=cfg.engine_args(str(folder)),
            train_dataset=Dataset.from_dict(
                {"prompt": [t.key for t in self.tasks(domain, "train")]}
            ),
            processing_class=self.tokenizer,
            rollout_func=self.rollout,
            callbacks=[callback],
            optimizers=(self.optimizer, None),
            continual=self,
        )
        callback.engine = engine
        if self._pending_optimizer_state is not None:
            engine.create_optimizer()
            engine.optimizer.load_state_dict(self._pending_optimizer_state)
            self._pending_optimizer_state = None
        resume, self._resume_engine_checkpoint = self._resume_engine_checkpoint, None
        engine.train(resume_from_checkpoint=resume)
        optimizer = engine.optimizer
        self.optimizer = getattr(optimizer, "optimizer", optimizer)
        self.log_rows += [
            {"domain": domain, "global_step": self._domain_start_step + row.get("step", 0), **row}
            for row in engine.state.log_history
        ]

    # -- one step's rollouts (TRL's rollout_func) ---------------------------------------------
    def rollout(self, prompts: list[str], engine: Any = None) -> dict[str, list[Any]]:
        """TRL ``rollout_func``: ``prompts`` are task keys, each repeated
        ``num_samples_per_prompt`` times; returns TRL's token fields plus the tau2 rewards."""
        cfg = self.config
        group = cfg.num_samples_per_prompt
        keys = list(dict.fromkeys(prompts[i] for i in range(0, len(prompts), group)))
        by_key = {t.key: t for t in self.tasks(self.current_domain, "train")}
        new_tasks = [by_key[k] for k in keys]
        tasks = self.compose_batch(new_tasks)
        seed = cfg.seed * 100_003 + self.global_step * 1_009 + self.process.process_index
        episodes = self.rollouts.run(tasks, group, cfg.temperature, seed)
        groups = [episodes[i : i + group] for i in range(0, len(episodes), group)]
        stats = step_statistics(episodes, group, self.current_domain, self.global_step)
        stats["informative_share_sampled"] = stats["informative_share"]
        if cfg.dynamic_sampling_max_extra_groups:
            refill = self._refill(groups, tasks, new_tasks, seed)
            groups = refill.groups
            stats.update(extra_groups=refill.extra_groups, replaced_groups=refill.replaced)
        for episode in (e for g in groups for e in g):
            if episode.task.domain == self.current_domain:
                self.trajectory_buffer.add_episode(episode, step=self.global_step)
        if cfg.guided_groups:
            groups, stats["guided_groups"] = guide_failed_groups(groups, self._known_success)
        episodes = [e for g in groups for e in g]
        trained = step_statistics(episodes, group, self.current_domain, self.global_step)
        stats.update(
            reward_mean=trained["reward_mean"], informative_share=trained["informative_share"]
        )
        stats["informative_groups"] = trained["informative_groups"]
        self.step_stats.append(stats)
        eos = self.tokenizer.eos_token_id
        return {
            "prompt_ids": [e.prompt_ids for e in episodes],
            "completion_ids": [e.completion_ids or [eos] for e in episodes],
            "logprobs": [e.logprobs or [0.0] for e in episodes],
            "env_mask": [e.env_mask or [0] for e in episodes],
            REWARD_FIELD: [e.reward for e in episodes],
        }

    def _refill(
        self, groups: list[list[Episode]], tasks: list[DomainTask], new: list[DomainTask], seed: int
    ) -> RefillResult:
        """Dynamic sampling: zero-variance groups of the step's new tasks replaced by fresh
        groups of the domain's other train tasks (seeded order), within the step's budget."""
        cfg = self.config
        new_keys = {t.key for t in new}
        in_batch = {t.key for t in tasks}
        pool = [t for t in self.tasks(self.current_domain, "train") if t.key not in in_batch]
        random.Random(seed).shuffle(pool)
        calls = iter(range(1, 1 << 30))

        def sample_groups(n: int) -> list[list[Episode]]:
            chosen, pool[:] = pool[:n], pool[n:]
            if not chosen:
                return []
            size = cfg.num_samples_per_prompt
            fresh = self.rollouts.run(chosen, size, cfg.temperature, seed + 7_919 * next(calls))
            return [fresh[i : i + size] for i in range(0, len(fresh), size)]

        replaceable = [t.key in new_keys for t in tasks]
        return refill_uninformative(
            groups, replaceable, sample_groups, cfg.dynamic_sampling_max_extra_groups
        )

    def _known_success(self, group: list[Episode]) -> Any | None:
        """A success of the group's task: the latest stored one, else its gold demonstration."""
        task = group[0].task
        stored = [
            r
            for r in self.trajectory_buffer.records(task.domain)
            if r.reward == 1.0 and r.task.key == task.key and r.completion_ids
        ]
        if stored:
            return max(stored, key=lambda r: r.order)
        if task.key not in self._gold:
            demos = gold_demonstrations(
                [task],
                self.tokenizer,
                max_context_tokens=self.config.max_context_tokens,
                assistant_prefix=self.config.agent_turn_prefix,
                max_tool_response_chars=self.config.tool_response_limit,
            )
            self._gold[task.key] = demos.episodes[0] if demos.episodes else None
        return self._gold[task.key]

    def compose_batch(self, new_tasks: list[DomainTask]) -> list[DomainTask]:
        """The step's task groups from its new tasks and the algorithm's replay
        (:func:`~tau2.continual_learning.grpo.batch.compose_batch`)."""
        self.current_batch_size = len(new_tasks)
        return compose_batch(self.cl_algorithm, new_tasks, self.current_domain)

    def on_step_end(self) -> None:
        self.global_step += 1
        self.cl_algorithm.post_step_hook(self, self.current_domain)

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate_domain(self, domain: str, limit: int | None = None) -> Score:
        """pass^1 (with its 95% interval) on ``domain``'s test tasks (the first ``limit``)."""
        tasks = self.tasks(domain, "test")[:limit] if limit else self.tasks(domain, "test")
        episodes = self._scored_episodes(tasks)
        if episodes:
            self.last_eval_episodes[domain] = episodes
        return pass_at_one(episodes)

    def score_tasks(self, tasks: list[DomainTask]) -> Score:
        """pass^1 of the current policy on ``tasks``, sampled as evaluations are. Under
        torchrun every rank gets the main process's score, so decisions taken on it agree."""
        score = pass_at_one(self._scored_episodes(tasks))
        if self.process.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            score = broadcast_object_list([score])[0]
        return score

    def _scored_episodes(self, tasks: list[DomainTask]) -> list[Episode]:
        """One episode per task at ``eval_temperature`` (greedy by default), seeded."""
        return self.rollouts.run(tasks, 1, self.config.eval_temperature, self.config.seed + 7)

    def evaluate_all(self, desc: str) -> list[Score]:
        """Scores of every domain of the sequence, in order."""
        return [self.evaluate_domain(d) for d in tqdm(self.config.domains, desc=desc, leave=False)]

    # -- results --------------------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        """Everything ``metrics.json`` holds: matrix, ACC/BWT/FWT/forgetting, intervals, stats."""
        cfg = self.config
        metrics: dict[str, Any] = {
            "domains": list(cfg.domains),
            "baseline": list(self.baseline),
            "accuracy_matrix": [list(r) for r in self.accuracy_matrix],
            "score_intervals": [list(r) for r in self.score_intervals],
        }
        if self.accuracy_matrix:
            cl = compute_cl_metrics(self.accuracy_matrix, self.baseline[: len(cfg.domains)] or None)
            metrics.update({k: cl[k] for k in ("ACC", "BWT", "FWT", "forgetting")})
            metrics["forgetting_per_domain"] = cl["forgetting_per_task"]
            metrics["intervals"] = bootstrap_cl_intervals(
                self.eval_rewards, self.baseline_rewards or None, seed=cfg.seed
            )
        metrics.update(
            {
                "cl_algorithm": self.cl_algorithm.name,
                "cl_statistics": self.cl_algorithm.get_statistics(),
                "wall_time_s": self.wall_time_s,
                "peak_rss_mb": peak_rss_mb(),
                "step_stats": list(self.step_stats),
                "global_steps": self.global_step,
                "nonfinite_losses": self.loss_guard.skipped,
                "passes_without_signal": self.passes_without_signal,
                "rollout_backend": cfg.sampling_backend,
                "weight_syncs": getattr(self.rollouts.policy, "syncs", None),
                "warm_start": dict(self.warm_start_stats),
                "task_source": cfg.task_source,
                "model_name_or_path": cfg.model_name_or_path,
                "seed": cfg.seed,
            }
        )
        return metrics

    def _write_rank_summary(self) -> None:
        """Under torchrun, every rank records what it ended with, so runs can be checked for
        agreement (``rank_summaries/rank-N.json``: matrix, step, a checksum of the weights)."""
        if self.process.num_processes < 2:
            return
        checksum = float(sum(p.detach().double().sum() for p in self.model.parameters()))
        rank = self.process.process_index
        summary = {
            "rank": rank,
            "global_step": self.global_step,
            "baseline": self.baseline,
            "accuracy_matrix": self.accuracy_matrix,
            "weights_checksum": checksum,
        }
        write_json_atomic(
            Path(self.config.output_dir) / "rank_summaries" / f"rank-{rank}.json", summary
        )

    def write_outputs(self) -> None:
        """metrics.json, training_log.csv and the run report (report.md and its figures)."""
        out = Path(self.config.output_dir)
        metrics = self.metrics()
        write_json_atomic(out / "metrics.json", metrics)
        if self.log_rows:
            write_rows_csv(out / "training_log.csv", self.log_rows)
        if self.accuracy_matrix:
            write_run_report(metrics, out)

    # -- checkpoints ----------------------------------------------------------------------------
    def continual_state(self, mid_domain: bool) -> dict[str, Any]:
        """Our part of a checkpoint (TRL's files hold the rest mid-domain)."""
        return {
            "domains": list(self.config.domains),
            "domain_index": self.domain_index,
            "mid_domain": mid_domain,
            "global_step": self.global_step,
            "domain_start_step": self._domain_start_step,
            "baseline": self.baseline,
            "accuracy_matrix": self.accuracy_matrix,
            "score_intervals": self.score_intervals,
            "baseline_rewards": self.baseline_rewards,
            "eval_rewards": self.eval_rewards,
            "step_stats": self.step_stats,
            "log_rows": self.log_rows,
            "warm_start": self.warm_start_stats,
            "nonfinite_losses": self.loss_guard.skipped,
            "passes_without_signal": self.passes_without_signal,
            "wall_time_s": self.wall_time_s,
            "cl_algorithm": self.cl_algorithm.name,
            "cl_state": self.cl_algorithm.state_dict(),
            "rng": rng_state(),
        }

    def load_checkpoint(self, path: str | Path, *, branch: bool = False) -> None:
        """Restore a checkpoint (``<output_dir>/checkpoints``, its ``latest``, or one folder);
        :meth:`train` then continues where the run stopped, mid-domain included.

        ``branch=True`` continues a domain-end checkpoint under this trainer's algorithm, which
        may differ from the one that wrote it, so runs that share their first domains (say
        ``sequential`` and ``replay`` on a sequence's first domain) train them once. Model,
        trajectory buffer, scores, logs and RNG come from the checkpoint; the algorithm starts
        fresh and sees ``pre_task_hook`` and ``post_task_hook`` of each finished domain, in
        order, with that domain's scores as the latest. What an algorithm does in between (per
        step, on batches, through a loss) is not replayed, so a branch equals a full run of its
        algorithm where the finished domains' training did not depend on the algorithm: true of
        ``sequential``, ``replay`` and ``adaptive_replay`` on a first domain (nothing earlier to
        replay or probe; tested)."""
        folder = self.checkpointer.resolve(path)
        state = torch.load(folder / STATE_FILE, weights_only=False)
        if state["domains"] != list(self.config.domains):
            raise ValueError(
                f"checkpoint {folder} is for domains {state['domains']}, config has {self.config.domains}"
            )
        written_by = state["cl_algorithm"]
        if branch and state["mid_domain"]:
            raise ValueError(
                f"checkpoint {folder} is mid-domain: a branch starts at a domain end "
                "(checkpoints/end-of-domain-NN)"
            )
        if not branch and written_by != self.cl_algorithm.name:
            raise ValueError(
                f"checkpoint {folder} was written by {written_by!r}, this trainer runs "
                f"{self.cl_algorithm.name!r}: resume with {written_by!r}, or pass branch=True to "
                f"continue the finished domains under {self.cl_algorithm.name!r}"
            )
        for key in (
            "domain_index",
            "global_step",
            "baseline",
            "accuracy_matrix",
            "score_intervals",
            "baseline_rewards",
            "eval_rewards",
            "step_stats",
            "log_rows",
            "wall_time_s",
        ):
            setattr(self, key, state[key])
        self._domain_start_step = state["domain_start_step"]
        self.warm_start_stats = state.get("warm_start", {})
        self.loss_guard.skipped = state["nonfinite_losses"]
        self.passes_without_signal = state.get("passes_without_signal", 0)
        if branch:
            self._replay_domain_hooks()
        else:
            self.cl_algorithm.load_state_dict(state["cl_state"])
        self.trajectory_buffer = TrajectoryBuffer.load(self.checkpointer.buffer_path(folder))
        set_rng_state(state["rng"])
        self._restored = True
        if state["mid_domain"]:  # TRL restores model, optimizer, scheduler, its RNG and step
            self._resume_engine_checkpoint = str(folder)
        else:
            load_weights(self.model, folder / "model")
            optimizer_file = folder / OPTIMIZER_FILE
            self._pending_optimizer_state = (
                torch.load(optimizer_file, weights_only=False) if optimizer_file.is_file() else None
            )
        logger.info(
            "%s from %s: domain %d, global step %d",
            f"Branched ({self.cl_algorithm.name} after {written_by})" if branch else "Resumed",
            folder,
            self.domain_index,
            self.global_step,
        )

    def _replay_domain_hooks(self) -> None:
        """A fresh algorithm's view of the finished domains' boundaries (a branch): each
        domain's ``pre_task_hook`` and ``post_task_hook``, with its own row as the latest."""
        rows = self.accuracy_matrix
        try:
            for index, domain in enumerate(self.config.domains[: self.domain_index]):
                self.accuracy_matrix = rows[: index + 1]
                self.cl_algorithm.pre_task_hook(self, domain)
                self.cl_algorithm.post_task_hook(self, domain)
        finally:
            self.accuracy_matrix = rows
