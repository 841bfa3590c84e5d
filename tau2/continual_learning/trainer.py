"""``GRPOTrainer``: the continual orchestrator around TRL's GRPO engine.

For each domain of ``config.domains`` in order (DESIGN.md section 3):

1. ``cl_algorithm.pre_task_hook``;
2. ``max_steps_per_domain`` GRPO steps run by TRL's ``GRPOTrainer``. Our multi-turn tau2
   rollouts enter through its ``rollout_func``: the step's new tasks go through
   ``cl_algorithm.augment_batch`` (replay mixes old tasks in), every task gets
   ``num_samples_per_prompt`` episodes from the batched :class:`EpisodeRunner`, tau2's
   evaluators give the rewards, and the token data (with ``env_mask``) goes back to TRL, which
   computes advantages and the loss, ``micro_batch_size`` sequences per forward/backward pass,
   accumulated into one optimizer step per rollout. ``cl_algorithm.extra_loss`` is added once per
   optimizer step (to its first micro-batch's loss); a non-finite loss skips that whole update.
   Finished episodes go into the trajectory buffer;
3. evaluation on the test split of every domain: one row of the accuracy matrix;
4. ``cl_algorithm.post_task_hook``, the statistics banner, a checkpoint.

Before the first domain the untrained model is scored on every domain (the FWT baseline).
One optimizer (and its state) is kept across domains unless
``reset_optimizer_between_domains``; the learning-rate schedule restarts per domain.
"""

from __future__ import annotations

import inspect
import logging
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import trl
from tqdm.auto import tqdm
from transformers import TrainerCallback

from tau2.continual_learning.buffer import TrajectoryBuffer
from tau2.continual_learning.cl_algorithm import CLAlgorithm, get_cl_algorithm_class
from tau2.continual_learning.config import GRPOConfig
from tau2.continual_learning.metrics import compute_cl_metrics
from tau2.continual_learning.model_loading import load_model_and_tokenizer
from tau2.continual_learning.report import (
    plot_accuracy_matrix,
    statistics_banner,
    write_json_atomic,
    write_rows_csv,
)
from tau2.continual_learning.rollout import DomainTask, EpisodeRunner, HFPolicy, load_tasks

logger = logging.getLogger(__name__)

REWARD_FIELD = "tau2_reward"


class NonFiniteLossError(RuntimeError):
    """Too many consecutive NaN/inf losses: training is diverging."""


def tau2_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    """TRL reward function: the reward tau2's evaluators gave each episode."""
    return [float(r) for r in kwargs[REWARD_FIELD]]


def build_cl_algorithm(config: GRPOConfig) -> CLAlgorithm:
    """Instantiate ``config.cl_algorithm`` with the config's matching parameters."""
    cls = get_cl_algorithm_class(config.cl_algorithm)
    params = {
        "replay_ratio": config.replay_ratio,
        "initial_replay_ratio": config.replay_ratio,
        "replay_strategy": config.replay_strategy,
        "min_buffer_size": config.min_buffer_size,
        "replay_all_domains": config.replay_all_domains,
        "max_replay_ratio": config.max_replay_ratio,
        "min_replay_ratio": config.min_replay_ratio,
        "adaptation_rate": config.adaptation_rate,
        "forgetting_threshold": config.forgetting_threshold,
        "probe_interval": config.probe_interval,
        "probe_tasks": config.probe_tasks_per_domain,
        "bc_weight": config.bc_weight,
        "bc_batch_size": config.bc_batch_size,
    }
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in params.items() if k in accepted})


class _Engine(trl.GRPOTrainer):
    """TRL's GRPO trainer plus the CL loss term and non-finite-loss protection."""

    def __init__(self, *args: Any, continual: GRPOTrainer, **kwargs: Any) -> None:
        self.continual = continual
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
        """TRL's loss of one micro-batch; the CL term joins the first micro-batch of each
        optimizer step only, so its weight per update does not depend on micro-batching."""
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        continual = self.continual
        if continual.take_extra_loss_turn():
            extra = continual.cl_algorithm.extra_loss(model, inputs, continual.current_domain)
            if extra is not None:
                loss = loss + extra
        return continual.guard_loss(loss, model)


class _StepCallback(TrainerCallback):
    """Forwards TRL's step and log events to the continual trainer."""

    def __init__(self, continual: GRPOTrainer) -> None:
        self.continual = continual

    def on_step_begin(self, args, state, control, **kwargs):
        self.continual.on_step_begin()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.continual.before_optimizer_step()

    def on_step_end(self, args, state, control, **kwargs):
        self.continual.on_step_end()

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self.continual.write_continual_state(folder, mid_domain=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self.continual.log_rows.append(
                {
                    "domain": self.continual.current_domain,
                    "global_step": self.continual.global_step,
                    **logs,
                }
            )


class GRPOTrainer:
    """Continual GRPO over a sequence of tau2 domains (see the module docstring).

    ``trainer.cl_algorithm`` may be replaced by any :class:`CLAlgorithm` instance before
    :meth:`train`. ``model``/``tokenizer`` may be passed to skip loading
    ``config.model_name_or_path``.
    """

    def __init__(
        self,
        config: GRPOConfig | None = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        cl_algorithm: CLAlgorithm | None = None,
    ) -> None:
        self.config = config if config is not None else GRPOConfig()
        cfg = self.config
        _seed_everything(cfg.seed)
        if model is None:
            model, loaded_tokenizer = load_model_and_tokenizer(cfg.model_name_or_path)
            tokenizer = tokenizer or loaded_tokenizer
        elif tokenizer is None:
            raise ValueError("GRPOTrainer: pass tokenizer= together with model=")
        if cfg.use_peft:
            model = _wrap_lora(model, cfg)
        self.model = model
        self.tokenizer = tokenizer
        self.trajectory_buffer = TrajectoryBuffer(
            cfg.replay_buffer_size, cfg.buffer_insertion_policy, cfg.seed
        )
        self._cl_algorithm: CLAlgorithm | None = None
        self.cl_algorithm = cl_algorithm if cl_algorithm is not None else build_cl_algorithm(cfg)
        self.user = _build_user(cfg, model, tokenizer)
        self.policy = HFPolicy(model, tokenizer)
        self.baseline: list[float] = []
        self.accuracy_matrix: list[list[float]] = []
        self.log_rows: list[dict[str, Any]] = []
        self.global_step = 0
        self.current_domain = cfg.domains[0]
        self.current_batch_size = cfg.batch_size_per_gpu
        self.nonfinite_losses = 0
        self._consecutive_nonfinite = 0
        self._step_nonfinite = False  # a micro-batch of the current optimizer step was NaN/inf
        self._extra_loss_due = True  # the next micro-batch is the first of its optimizer step
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending_optimizer_state: dict[str, Any] | None = None
        self._resume_engine_checkpoint: str | None = None
        self.domain_index = 0
        self.wall_time_s = 0.0
        self._task_cache: dict[tuple[str, str], list[DomainTask]] = {}
        self.last_eval_episodes: dict[str, list[Any]] = {}
        """The latest evaluation's episodes per domain (for inspection and reports)."""

    @property
    def rank(self) -> int:
        """This process's rank under torchrun/accelerate (0 when not distributed)."""
        return int(os.environ.get("RANK", "0"))

    @property
    def is_main_process(self) -> bool:
        return self.rank == 0

    # -- the CL algorithm ---------------------------------------------------------------------
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

    # -- tasks and rollouts -------------------------------------------------------------------
    def tasks(self, domain: str, split: str) -> list[DomainTask]:
        """Train or test tasks of ``domain`` (trivial tasks dropped from training if asked)."""
        key = (domain, split)
        if key not in self._task_cache:
            tasks = load_tasks(domain, split, self.config.task_source, seed=self.config.skills_seed)
            if split == "train" and self.config.exclude_trivial_tasks:
                tasks = [t for t in tasks if not t.trivial] or tasks
            if split == "test" and self.config.eval_tasks_per_domain is not None:
                tasks = tasks[: self.config.eval_tasks_per_domain]
            self._task_cache[key] = tasks
        return self._task_cache[key]

    def _runner(self, temperature: float, seed: int) -> EpisodeRunner:
        cfg = self.config
        extra = (
            {"assistant_prefix": cfg.assistant_prefix} if cfg.assistant_prefix is not None else {}
        )
        return EpisodeRunner(
            self.policy,
            user=self.user,
            max_turns=cfg.max_turns,
            max_new_tokens_per_turn=cfg.max_new_tokens_per_turn,
            max_context_tokens=cfg.max_context_tokens,
            temperature=temperature,
            scoring_workers=0,
            seed=seed,
            **extra,
        )

    def run_episodes(
        self, tasks: list[DomainTask], num_generations: int, temperature: float, seed: int
    ) -> list[Any]:
        """Episodes of ``tasks`` with the current policy (bf16 autocast when configured)."""
        device_type = next(self.model.parameters()).device.type
        autocast = torch.autocast(device_type, dtype=torch.bfloat16, enabled=bool(self.config.bf16))
        with autocast, self._runner(temperature, seed=seed) as runner:
            return runner.run(tasks, num_generations=num_generations)

    def rollout(self, prompts: list[str], engine: Any = None) -> dict[str, list[Any]]:
        """TRL ``rollout_func``: ``prompts`` are task keys, repeated ``num_generations`` times."""
        cfg = self.config
        group = cfg.num_samples_per_prompt
        keys = list(dict.fromkeys(prompts[i] for i in range(0, len(prompts), group)))
        by_key = {t.key: t for t in self.tasks(self.current_domain, "train")}
        new_tasks = [by_key[k] for k in keys]
        tasks = self.compose_batch(new_tasks)
        seed = cfg.seed * 100_003 + self.global_step * 1_009 + self.rank  # distinct per rank
        episodes = self.run_episodes(tasks, group, cfg.temperature, seed)
        for episode in episodes:
            if episode.task.domain == self.current_domain:
                self.trajectory_buffer.add_episode(episode, step=self.global_step)
        return {
            "prompt_ids": [e.prompt_ids for e in episodes],
            "completion_ids": [e.completion_ids or [self.tokenizer.eos_token_id] for e in episodes],
            "logprobs": [e.logprobs or [0.0] for e in episodes],
            "env_mask": [e.env_mask or [0] for e in episodes],
            REWARD_FIELD: [e.reward for e in episodes],
        }

    def compose_batch(self, new_tasks: list[DomainTask]) -> list[DomainTask]:
        """The step's task groups: ``len(new_tasks)`` of them, ``num_replay_slots`` offered to
        the CL algorithm for replay; gaps are refilled with new tasks, surplus new tasks dropped
        first, and at least one new task is always kept."""
        size = len(new_tasks)
        self.current_batch_size = size
        slots = min(self.cl_algorithm.num_replay_slots(size), size - 1)
        offered = new_tasks[: size - slots]
        result = list(self.cl_algorithm.augment_batch(list(offered), self.current_domain))
        for task in result:
            if not isinstance(task, DomainTask):
                raise TypeError(
                    f"augment_batch returned a {type(task).__name__}, expected DomainTask"
                )
        offered_ids = {id(t) for t in new_tasks}
        replay = [t for t in result if id(t) not in offered_ids][: size - 1]
        fresh = [t for t in result if id(t) in offered_ids]
        used = {id(t) for t in fresh}
        fresh += [t for t in new_tasks if id(t) not in used]
        return fresh[: size - len(replay)] + replay

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate_domain(self, domain: str, limit: int | None = None) -> float:
        """pass^1 on ``domain``'s test tasks (the first ``limit`` ones if given)."""
        tasks = self.tasks(domain, "test")[:limit] if limit else self.tasks(domain, "test")
        episodes = self.run_episodes(tasks, 1, self.config.eval_temperature, self.config.seed + 7)
        if episodes:
            self.last_eval_episodes[domain] = episodes
        return float(np.mean([e.reward for e in episodes])) if episodes else 0.0

    def evaluate_all(self, desc: str) -> list[float]:
        """Scores of every domain of the sequence, in order."""
        return [self.evaluate_domain(d) for d in tqdm(self.config.domains, desc=desc, leave=False)]

    def probe(self, domains: list[str], num_tasks: int) -> dict[str, float]:
        """Quick scores on a few test tasks of ``domains`` (adaptive replay's forgetting signal)."""
        return {d: self.evaluate_domain(d, limit=num_tasks) for d in domains}

    def latest_scores(self) -> dict[str, float]:
        """The last accuracy-matrix row as ``{domain: score}``."""
        if not self.accuracy_matrix:
            return {}
        return dict(zip(self.config.domains, self.accuracy_matrix[-1], strict=False))

    # -- loss guard and step events -------------------------------------------------------------
    def guard_loss(self, loss: torch.Tensor, model: Any) -> torch.Tensor:
        """Replace a micro-batch's NaN/inf loss by a zero loss and mark its optimizer step, which
        :meth:`before_optimizer_step` then skips and counts."""
        if torch.isfinite(loss).all():
            return loss
        self._step_nonfinite = True
        logger.warning(
            "Non-finite loss (%s) at step %d on %s: this update will be skipped",
            loss.detach().item(),
            self.global_step,
            self.current_domain,
        )
        params = [p for p in model.parameters() if p.requires_grad]
        return sum(p.sum() * 0.0 for p in params[:1]) if params else loss.new_zeros(())

    def take_extra_loss_turn(self) -> bool:
        """True once per optimizer step: for its first micro-batch, which carries the CL term."""
        due, self._extra_loss_due = self._extra_loss_due, False
        return due

    def on_step_begin(self) -> None:
        """An optimizer step (one generation, ``steps_per_generation`` micro-batches) begins."""
        self._extra_loss_due = True
        self._step_nonfinite = False

    def before_optimizer_step(self) -> None:
        """Skip an update that had a non-finite micro-batch loss on any process (its gradients
        are dropped, so the optimizer leaves every parameter alone), count it; stop after K such
        steps in a row."""
        skip, self._step_nonfinite = self._step_nonfinite, False
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([float(skip)], device=next(self.model.parameters()).device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            skip = bool(flag.item())  # every rank skips the same updates and stays in sync
        if not skip:
            self._consecutive_nonfinite = 0
            return
        self.nonfinite_losses += 1
        self._consecutive_nonfinite += 1
        logger.warning(
            "Update at step %d on %s skipped after a non-finite loss (%d in a row)",
            self.global_step,
            self.current_domain,
            self._consecutive_nonfinite,
        )
        if self._consecutive_nonfinite >= self.config.max_consecutive_nonfinite_losses:
            raise NonFiniteLossError(
                f"{self._consecutive_nonfinite} consecutive non-finite losses (limit "
                f"max_consecutive_nonfinite_losses={self.config.max_consecutive_nonfinite_losses}) at step "
                f"{self.global_step} on domain {self.current_domain!r}: training diverged. Lower the learning "
                "rate or check the CL algorithm's extra loss."
            )
        for param in self.model.parameters():
            param.grad = None

    def on_step_end(self) -> None:
        self.global_step += 1
        self.cl_algorithm.post_step_hook(self, self.current_domain)

    # -- the run --------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Train through every domain; returns (and writes) the metrics."""
        cfg = self.config
        start = time.perf_counter()
        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        if not self.baseline:
            self.baseline = self.evaluate_all("baseline")
            logger.info(
                "Baseline (untrained) scores: %s",
                dict(zip(cfg.domains, self.baseline, strict=True)),
            )
        for index in range(self.domain_index, len(cfg.domains)):
            domain = cfg.domains[index]
            self.current_domain = domain
            logger.info("=== Domain %d/%d: %s ===", index + 1, len(cfg.domains), domain)
            if self._resume_engine_checkpoint is None:  # a mid-domain resume already ran it
                self.cl_algorithm.pre_task_hook(self, domain)
            self._train_domain(domain)
            row = self.evaluate_all(f"eval after {domain}")
            self.accuracy_matrix.append(row)
            logger.info("Scores after %s: %s", domain, dict(zip(cfg.domains, row, strict=True)))
            self.cl_algorithm.post_task_hook(self, domain)
            logger.info("\n%s", statistics_banner(domain, self.cl_algorithm.get_statistics()))
            self.domain_index = index + 1
            self.wall_time_s += time.perf_counter() - start
            start = time.perf_counter()
            self._write_rank_summary()
            if self.is_main_process:
                self.save_checkpoint()
                self.write_outputs()
        return self.metrics()

    def _train_domain(self, domain: str) -> None:
        from datasets import Dataset

        cfg = self.config
        train_keys = [t.key for t in self.tasks(domain, "train")]
        if cfg.reset_optimizer_between_domains and self._resume_engine_checkpoint is None:
            self.optimizer = None
            self._pending_optimizer_state = None
        # TRL writes its mid-domain checkpoints under the domain's folder
        args = cfg.engine_args(
            str(self.checkpoint_root / f"domain-{self.domain_index:02d}-{domain}")
        )
        engine = _Engine(
            model=self.model,
            reward_funcs=[tau2_reward],
            args=args,
            train_dataset=Dataset.from_dict({"prompt": train_keys}),
            processing_class=self.tokenizer,
            rollout_func=self.rollout,
            callbacks=[_StepCallback(self)],
            optimizers=(self.optimizer, None),
            continual=self,
        )
        if self._pending_optimizer_state is not None:
            engine.create_optimizer()
            engine.optimizer.load_state_dict(self._pending_optimizer_state)
            self._pending_optimizer_state = None
        resume, self._resume_engine_checkpoint = self._resume_engine_checkpoint, None
        engine.train(resume_from_checkpoint=resume)
        optimizer = engine.optimizer
        self.optimizer = getattr(optimizer, "optimizer", optimizer)

    # -- results --------------------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        cfg = self.config
        metrics: dict[str, Any] = {
            "domains": list(cfg.domains),
            "baseline": list(self.baseline),
            "accuracy_matrix": [list(r) for r in self.accuracy_matrix],
        }
        if self.accuracy_matrix:
            cl = compute_cl_metrics(self.accuracy_matrix, self.baseline[: len(cfg.domains)] or None)
            metrics.update({k: cl[k] for k in ("ACC", "BWT", "FWT", "forgetting")})
            metrics["forgetting_per_domain"] = cl["forgetting_per_task"]
        metrics.update(
            {
                "cl_algorithm": self.cl_algorithm.name,
                "cl_statistics": self.cl_algorithm.get_statistics(),
                "wall_time_s": self.wall_time_s,
                "global_steps": self.global_step,
                "nonfinite_losses": self.nonfinite_losses,
                "task_source": cfg.task_source,
                "model_name_or_path": cfg.model_name_or_path,
                "seed": cfg.seed,
            }
        )
        return metrics

    def _write_rank_summary(self) -> None:
        """Under torchrun, every rank records what it ended with, so runs can be checked for
        agreement (``rank_summaries/rank-N.json``: matrix, step, a checksum of the weights)."""
        if int(os.environ.get("WORLD_SIZE", "1")) < 2:
            return
        checksum = float(sum(p.detach().double().sum() for p in self.model.parameters()))
        summary = {
            "rank": self.rank,
            "global_step": self.global_step,
            "baseline": self.baseline,
            "accuracy_matrix": self.accuracy_matrix,
            "weights_checksum": checksum,
        }
        write_json_atomic(
            Path(self.config.output_dir) / "rank_summaries" / f"rank-{self.rank}.json", summary
        )

    def write_outputs(self) -> None:
        """metrics.json, training_log.csv and accuracy_matrix.png in ``output_dir``."""
        out = Path(self.config.output_dir)
        write_json_atomic(out / "metrics.json", self.metrics())
        if self.log_rows:
            write_rows_csv(out / "training_log.csv", self.log_rows)
        if self.accuracy_matrix:
            plot_accuracy_matrix(
                self.accuracy_matrix,
                self.config.domains,
                out / "accuracy_matrix.png",
                self.baseline,
            )

    # -- checkpoints ------------------------------------------------------------------------------
    @property
    def checkpoint_root(self) -> Path:
        return Path(self.config.output_dir) / "checkpoints"

    def _continual_state(self, mid_domain: bool) -> dict[str, Any]:
        return {
            "domains": list(self.config.domains),
            "domain_index": self.domain_index,
            "mid_domain": mid_domain,
            "global_step": self.global_step,
            "baseline": self.baseline,
            "accuracy_matrix": self.accuracy_matrix,
            "log_rows": self.log_rows,
            "nonfinite_losses": self.nonfinite_losses,
            "wall_time_s": self.wall_time_s,
            "cl_algorithm": self.cl_algorithm.name,
            "cl_state": self.cl_algorithm.state_dict(),
            "rng": _rng_state(),
        }

    def write_continual_state(self, folder: Path, mid_domain: bool) -> None:
        """Add our state (buffer, CL state, matrix, RNG, position) to a checkpoint folder and
        point ``checkpoints/latest`` at it; the pointer moves only once everything is written.
        Only the main process writes (its buffer is the one restored on resume)."""
        if not self.is_main_process:
            return
        torch.save(self._continual_state(mid_domain), folder / ".continual_state.pt.tmp")
        self.trajectory_buffer.save(folder / "buffer.pkl")
        os.replace(folder / ".continual_state.pt.tmp", folder / "continual_state.pt")
        self._point_latest(folder)

    def _point_latest(self, folder: Path) -> None:
        pointer = self.checkpoint_root / ".latest.tmp"
        pointer.write_text(str(folder.resolve().relative_to(self.checkpoint_root.resolve())))
        os.replace(pointer, self.checkpoint_root / "latest")

    def save_checkpoint(self) -> Path:
        """Domain-end checkpoint: model, optimizer and our state in a temporary folder that is
        renamed into place, then ``latest`` points at it."""
        root = self.checkpoint_root
        root.mkdir(parents=True, exist_ok=True)
        name = f"end-of-domain-{self.domain_index:02d}"
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
        self.model.save_pretrained(staging / "model")
        self.tokenizer.save_pretrained(staging / "model")
        if self.optimizer is not None:
            torch.save(self.optimizer.state_dict(), staging / "optimizer.pt")
        torch.save(self._continual_state(mid_domain=False), staging / "continual_state.pt")
        self.trajectory_buffer.save(staging / "buffer.pkl")
        target = root / name
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
        self._point_latest(target)
        return target

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Restore a checkpoint (``<output_dir>/checkpoints``, its ``latest``, or one folder);
        :meth:`train` then continues where the run stopped, mid-domain included."""
        path = Path(path)
        if (path / "latest").is_file():
            path = path / (path / "latest").read_text().strip()
        if not (path / "continual_state.pt").is_file():
            raise FileNotFoundError(
                f"{path} is not a tau2-continual checkpoint (no continual_state.pt)"
            )
        state = torch.load(path / "continual_state.pt", weights_only=False)
        if state["domains"] != list(self.config.domains):
            raise ValueError(
                f"checkpoint {path} is for domains {state['domains']}, config has {self.config.domains}"
            )
        for key in (
            "domain_index",
            "global_step",
            "baseline",
            "accuracy_matrix",
            "log_rows",
            "nonfinite_losses",
            "wall_time_s",
        ):
            setattr(self, key, state[key])
        self.cl_algorithm.load_state_dict(state["cl_state"])
        self.trajectory_buffer = TrajectoryBuffer.load(path / "buffer.pkl")
        _set_rng_state(state["rng"])
        if state["mid_domain"]:  # TRL restores model, optimizer, scheduler, its RNG and step
            self._resume_engine_checkpoint = str(path)
        else:
            _load_weights(self.model, path / "model")
            optimizer_file = path / "optimizer.pt"
            self._pending_optimizer_state = (
                torch.load(optimizer_file, weights_only=False) if optimizer_file.is_file() else None
            )
        logger.info(
            "Resumed from %s: domain %d, global step %d", path, self.domain_index, self.global_step
        )


def _load_weights(model: Any, folder: Path) -> None:
    """Load saved weights (full model or PEFT adapter) into ``model`` in place."""
    from safetensors.torch import load_file

    adapter = folder / "adapter_model.safetensors"
    if adapter.is_file():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(adapter)))
        return
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def _wrap_lora(model: Any, cfg: GRPOConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules or "all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def _build_user(cfg: GRPOConfig, model: Any, tokenizer: Any) -> Any:
    """The user simulator for tasks without a ticket (``None`` = solo only)."""
    from tau2.continual_learning.rollout import HFUser, LiteLLMUser

    mode = cfg.user_mode
    if mode == "auto":
        mode = "llm" if cfg.user_llm else ("solo" if cfg.task_source == "skills" else "hf")
    if mode == "solo":
        return None
    if mode == "llm":
        return LiteLLMUser(
            cfg.user_llm, api_base=cfg.user_api_base, temperature=cfg.user_temperature
        )
    if cfg.user_model_name_or_path:
        model, tokenizer = load_model_and_tokenizer(cfg.user_model_name_or_path)
    return HFUser(model, tokenizer)
