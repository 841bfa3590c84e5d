"""``GRPOTrainer``: continual GRPO over a sequence of tau2 domains.

The domain loop (:meth:`GRPOTrainer.train`): the untrained model is scored on every domain (the
FWT baseline); then, per domain, ``cl_algorithm.pre_task_hook``, the supervised warm start on
gold demonstrations (:mod:`~tau2.continual_learning.grpo.warm_start`, under its guard) and the
domain's score after it (``score_after_warm_start``), ``max_steps_per_domain`` GRPO steps run by
TRL (:mod:`~tau2.continual_learning.grpo.trl_trainer`) on episodes from
:class:`~tau2.continual_learning.grpo.step.GRPOStep`, every domain scored (one accuracy-matrix
row), ``cl_algorithm.post_task_hook``, a checkpoint and the outputs.

What the run measured lives in its :class:`~tau2.continual_learning.grpo.record.RunRecord`,
resuming in :mod:`~tau2.continual_learning.grpo.checkpointing`, and what an algorithm may read
in :class:`~tau2.continual_learning.grpo.trainer_view.TrainerView`.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from tqdm.auto import tqdm
from transformers import set_seed

from tau2.continual_learning.cl_algorithm import AlgorithmSlot, CLAlgorithm
from tau2.continual_learning.grpo.algorithms import GRPO_ALGORITHMS
from tau2.continual_learning.grpo.checkpointing import Checkpointer, ResumePoint
from tau2.continual_learning.grpo.config import GRPOConfig
from tau2.continual_learning.grpo.evaluation import Evaluator, Score
from tau2.continual_learning.grpo.record import OnRecord, RunRecord
from tau2.continual_learning.grpo.rollouts import Rollouts
from tau2.continual_learning.grpo.seeds import Seeds
from tau2.continual_learning.grpo.step import GRPOStep
from tau2.continual_learning.grpo.tracking import RunTracker
from tau2.continual_learning.grpo.trainer_view import TrainerView
from tau2.continual_learning.grpo.trajectory_buffer import TrajectoryBuffer
from tau2.continual_learning.grpo.trl_trainer import (
    REWARD_FIELD,
    DomainGRPOTrainer,
    LossGuard,
    NonFiniteLossError,
    TrainingHooks,
    tau2_reward,
)
from tau2.continual_learning.grpo.warm_start import WarmStart
from tau2.continual_learning.grpo.warm_start_guard import WarmStartGuard
from tau2.continual_learning.model_loading import load_model_and_tokenizer, wrap_lora
from tau2.continual_learning.report import statistics_banner
from tau2.continual_learning.rollout import DomainTask

logger = logging.getLogger(__name__)

__all__ = ["REWARD_FIELD", "GRPOTrainer", "NonFiniteLossError", "build_cl_algorithm"]


def build_cl_algorithm(config: GRPOConfig) -> CLAlgorithm:
    """Instantiate ``config.cl_algorithm`` from the config's flat fields (each algorithm
    validates its own parameters)."""
    return GRPO_ALGORITHMS.get(config.cl_algorithm).from_config(config)


class GRPOTrainer:
    """Continual GRPO over a sequence of tau2 domains (see the module docstring).

    ``trainer.cl_algorithm`` may be replaced by any :class:`CLAlgorithm` before :meth:`train`;
    it sees the run through ``trainer.view``. ``model``/``tokenizer`` may be passed to skip
    loading ``config.model_name_or_path``. ``baseline`` and ``baseline_rewards`` (fields of
    ``trainer.record``, like the attributes below them) may be set before :meth:`train` to reuse
    another run's untrained scores (same model, seed and domains)."""

    cl_algorithm = AlgorithmSlot(view=lambda trainer: trainer.view)
    baseline = OnRecord()
    baseline_rewards = OnRecord()
    accuracy_matrix = OnRecord()
    log_rows = OnRecord()
    global_step = OnRecord()
    domain_index = OnRecord()
    nonfinite_losses = OnRecord()

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
        self.record = RunRecord(domains=list(cfg.domains))
        self.tracker = RunTracker(cfg, self.process.is_main_process)
        """The run's one experiment-tracker run (``report_to``), global step on its x axis."""
        self.seeds = Seeds(cfg.seed)
        self.trajectory_buffer = TrajectoryBuffer(
            cfg.replay_buffer_size, cfg.buffer_insertion_policy, cfg.seed
        )
        self.view = TrainerView(self)
        self.cl_algorithm = cl_algorithm if cl_algorithm is not None else build_cl_algorithm(cfg)
        self.rollouts = Rollouts(cfg, model, tokenizer)
        self.step = GRPOStep(cfg, self.rollouts, tokenizer, self.record, self.seeds)
        self.warm_start = WarmStart(cfg, tokenizer, self.rollouts.max_context_tokens)
        self.warm_start_guard = WarmStartGuard(
            cfg.warm_start_guard_tasks, cfg.warm_start_guard_retries
        )
        self.checkpointer = Checkpointer(self)
        self.loss_guard = LossGuard(cfg.max_consecutive_nonfinite_losses)
        self.current_domain = cfg.domains[0]
        self.optimizer: torch.optim.Optimizer | None = None  # kept across domains unless reset
        self.evaluator = Evaluator(self.rollouts, cfg.eval_temperature, self.seeds.evaluation())
        self.last_eval_episodes = self.evaluator.last_episodes
        self._resume: ResumePoint | None = None
        """What a loaded checkpoint hands the next domain; ``None`` until one was looked for."""

    def tasks(self, domain: str, split: str) -> list[DomainTask]:
        """Train, validation or test tasks of ``domain`` as this run uses them."""
        return self.rollouts.tasks(domain, split)

    def probe(self, domains: list[str], num_tasks: int) -> dict[str, float]:
        """Quick scores on the first ``num_tasks`` validation tasks of each of ``domains``."""
        validation = {d: self.tasks(d, "validation")[:num_tasks] for d in domains}
        return {d: self.evaluator.tasks(tasks).mean for d, tasks in validation.items()}

    def where(self) -> str:
        """Where training is, for messages."""
        return f"at step {self.record.global_step} on {self.current_domain!r}"

    def close(self) -> None:
        """Release the sampling backend (a vLLM engine's memory and process group); the trainer
        cannot sample afterwards. The command-line job calls it when the run ends."""
        self.rollouts.close()

    # -- the run --------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Train through every domain; returns (and writes) the metrics. A config's
        ``resume_from_checkpoint`` or ``branch_from_checkpoint`` is loaded first unless
        :meth:`load_checkpoint` already ran."""
        cfg, record = self.config, self.record
        if self._resume is None:
            self._resume = self.checkpointer.load_configured()
        start = time.perf_counter()
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        if not record.baseline:
            record.set_baseline(self.evaluate_all("baseline"))
            logger.info(
                "Baseline (untrained): %s", dict(zip(cfg.domains, record.baseline, strict=True))
            )
        for index in range(record.domain_index, len(cfg.domains)):
            domain = self.current_domain = cfg.domains[index]
            logger.info("=== Domain %d/%d: %s ===", index + 1, len(cfg.domains), domain)
            resume, self._resume = self._resume, ResumePoint()
            if not resume.mid_domain:  # a mid-domain resume already ran these
                self.cl_algorithm.pre_task_hook(self.view, domain)
                record.begin_domain(domain)
                if self.warm_start.applies_to(domain):
                    self._warm_start(domain)
                elif cfg.warm_start_demos_per_domain:  # learned from reward alone
                    record.warm_start[domain] = {"skipped": "not in warm_start_domains"}
            if cfg.max_steps_per_domain:  # 0: warm start only
                self._train_domain(domain, resume)
            record.add_row(domain, self.evaluate_all(f"eval after {domain}"))
            logger.info("Scores after %s: %s", domain, record.latest_scores())
            self.cl_algorithm.post_task_hook(self.view, domain)
            statistics = self.cl_algorithm.get_statistics()
            logger.info("\n%s", statistics_banner(domain, statistics))
            self.tracker.log_domain_end(record, domain, statistics)
            record.domain_index = index + 1
            record.wall_time_s += time.perf_counter() - start
            start = time.perf_counter()
            record.write_rank_summary(cfg.output_dir, self.process, self.model)
            self.checkpointer.save_domain_end(final=record.domain_index == len(cfg.domains))
            if self.process.is_main_process:
                self.write_outputs()
        self.tracker.close()
        return self.metrics()

    def _warm_start(self, domain: str) -> None:
        """Supervised steps on ``domain``'s gold demonstrations (plus replayed ones), under
        the warm-start guard when it is on; then, if asked, the domain's score after them."""
        cfg = self.config
        train_tasks = partial(self.tasks, split="train")
        warm_start = partial(
            self.warm_start.run, self.model, domain, train_tasks, self.cl_algorithm
        )
        demos = self.warm_start.demonstrations(domain, train_tasks(domain)).episodes
        checked = [e.task for e in demos[: self.warm_start_guard.tasks]]
        score = (lambda: self.evaluator.tasks(checked).mean) if checked else None
        stats, rows = self.warm_start_guard.run(
            self.model, warm_start, score, cfg.warm_start_learning_rate, domain
        )
        self.record.warm_start[domain] = stats
        self.record.add_log_rows(domain, rows, phase="warm_start")
        if cfg.score_after_warm_start and stats["steps"]:
            score = self.evaluator.domain(domain).mean
            self.record.phase_scores.setdefault(domain, {})["after_warm_start"] = score

    def _train_domain(self, domain: str, resume: ResumePoint) -> None:
        """The domain's GRPO steps: a TRL trainer over its train tasks (a fresh learning-rate
        schedule; the optimizer is kept unless ``reset_optimizer_between_domains``)."""
        from datasets import Dataset

        cfg = self.config
        optimizer_state = resume.optimizer_state
        if cfg.reset_optimizer_between_domains and not resume.mid_domain:
            self.optimizer, optimizer_state = None, None
        folder = self.checkpointer.domain_folder(self.record.domain_index, domain)
        trainer = DomainGRPOTrainer(
            model=self.model,
            reward_funcs=[tau2_reward],
            args=cfg.trl_args(str(folder)),
            train_dataset=Dataset.from_dict(
                {"prompt": [t.key for t in self.tasks(domain, "train")]}
            ),
            processing_class=self.tokenizer,
            rollout_func=self.rollout,
            optimizers=(self.optimizer, None),
            hooks=TrainingHooks(
                extra_loss=lambda model, inputs: self.cl_algorithm.extra_loss(
                    model, inputs, self.current_domain
                ),
                loss_guard=self.loss_guard,
                counts=self.record,
                on_step_end=self.on_step_end,
                on_save=self.checkpointer.complete_mid_domain,
                on_log=lambda row: self.record.add_trl_log(domain, row),
                where=self.where,
                sync_weights=getattr(self.rollouts.policy, "sync", None),
            ),
        )
        self.tracker.attach(trainer, self.record.domain_start_step, self.model)
        if optimizer_state is not None:
            trainer.create_optimizer()
            trainer.optimizer.load_state_dict(optimizer_state)
        trainer.train(resume_from_checkpoint=resume.trl_checkpoint)
        optimizer = trainer.optimizer
        self.optimizer = getattr(optimizer, "optimizer", optimizer)

    def rollout(self, prompts: list[str], trl_trainer: Any = None) -> dict[str, list[Any]]:
        """TRL's ``rollout_func``: one GRPO step's episodes
        (:meth:`~tau2.continual_learning.grpo.step.GRPOStep.run`)."""
        return self.step.run(
            prompts, self.current_domain, self.cl_algorithm, self.trajectory_buffer
        )

    def compose_batch(self, new_tasks: list[DomainTask]) -> list[DomainTask]:
        """The step's task groups from its new tasks and the algorithm's replay."""
        return self.step.compose_batch(new_tasks, self.current_domain, self.cl_algorithm)

    def on_step_end(self) -> None:
        self.record.global_step += 1
        self.cl_algorithm.post_step_hook(self.view, self.current_domain)

    def evaluate_all(self, desc: str) -> list[Score]:
        """Scores of every domain of the sequence, in order."""
        return [self.evaluator.domain(d) for d in tqdm(self.config.domains, desc=desc, leave=False)]

    # -- results and checkpoints ----------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        """Everything ``metrics.json`` holds (:meth:`RunRecord.metrics`) and what the run was."""
        cfg = self.config
        return self.record.metrics(
            cfg.seed,
            {
                "cl_algorithm": self.cl_algorithm.name,
                "cl_statistics": self.cl_algorithm.get_statistics(),
                "sampling_backend": cfg.sampling_backend,
                "weight_syncs": getattr(self.rollouts.policy, "syncs", None),
                "task_source": cfg.task_source,
                "model_name_or_path": cfg.model_name_or_path,
                "seed": cfg.seed,
            },
        )

    def write_outputs(self) -> None:
        """metrics.json, training_log.csv and the run report (report.md and its figures)."""
        self.record.write(self.config.output_dir, self.metrics())

    def load_checkpoint(self, path: str | Path, *, branch: bool = False) -> None:
        """Restore a checkpoint (``<output_dir>/checkpoints``, its ``latest``, or one folder);
        :meth:`train` then continues where the run stopped, mid-domain included. ``branch=True``
        continues a domain-end checkpoint under this trainer's algorithm, which may differ from
        the one that wrote it (:meth:`~tau2.continual_learning.grpo.checkpointing.Checkpointer.load`)."""
        self._resume = self.checkpointer.load(path, branch=branch)
