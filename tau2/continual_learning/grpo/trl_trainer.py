"""TRL's ``GRPOTrainer`` as the trainer of one domain, with what continual training adds.

TRL computes advantages, the clipped policy loss, KL, importance-sampling correction and the
optimizer step; this module adds only

* :class:`DomainGRPOTrainer`: the CL algorithm's ``extra_loss`` (once per optimizer step), the
  :class:`LossGuard`, and no forward/backward pass for a micro-batch without learning signal;
  it sees the continual run only through a :class:`TrainingHooks` object (TRL's step, save and log
  events are forwarded to it);
* :class:`LossGuard`: a NaN/inf micro-batch loss skips its whole update; ``K`` in a row stop
  the run with :class:`NonFiniteLossError`;
* :func:`tau2_reward`: the reward function TRL calls, returning what tau2's evaluators gave.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import trl
from transformers import TrainerCallback

from tau2.continual_learning.grpo import lm_head_tiles, sampling_correction, shared_prefix

logger = logging.getLogger(__name__)

REWARD_FIELD = "tau2_reward"
"""Key under which the rollout function hands each episode's tau2 reward to TRL."""


class NonFiniteLossError(RuntimeError):
    """Too many consecutive NaN/inf losses: training is diverging."""


def tau2_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    """TRL reward function: the reward tau2's evaluators gave each episode."""
    return [float(r) for r in kwargs[REWARD_FIELD]]


class LossGuard:
    """Skips updates whose loss is not finite and stops after ``limit`` of them in a row.

    A non-finite micro-batch loss is replaced by a zero loss (so backward still runs and every
    rank stays in step); the optimizer step it belongs to is then skipped with its gradients
    dropped. Under torchrun the skip decision is all-reduced, so every rank skips the same
    updates.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.consecutive = 0
        self._step_nonfinite = False

    def check(self, loss: torch.Tensor, model: Any, where: str) -> torch.Tensor:
        """``loss`` if finite, else a zero loss connected to the graph (and the step marked)."""
        if torch.isfinite(loss).all():
            return loss
        self._step_nonfinite = True
        logger.warning("Non-finite loss (%s) %s: this update will be skipped", loss.item(), where)
        return zero_loss(model)

    def begin_step(self) -> None:
        self._step_nonfinite = False

    def before_optimizer_step(self, model: Any, where: str) -> bool:
        """Drop the gradients of a marked step (the optimizer then leaves every parameter
        alone) and return ``True``; raise after ``limit`` such steps in a row."""
        skip, self._step_nonfinite = self._step_nonfinite, False
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([float(skip)], device=next(model.parameters()).device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            skip = bool(flag.item())
        if not skip:
            self.consecutive = 0
            return False
        self.consecutive += 1
        logger.warning(
            "Update %s skipped after a non-finite loss (%d in a row)", where, self.consecutive
        )
        if self.consecutive >= self.limit:
            raise NonFiniteLossError(
                f"{self.consecutive} consecutive non-finite losses (limit "
                f"max_consecutive_nonfinite_losses={self.limit}) {where}: training diverged. "
                "Lower the learning rate or check the CL algorithm's extra loss."
            )
        for param in model.parameters():
            param.grad = None
        return True


@dataclass
class TrainingHooks:
    """What :class:`DomainGRPOTrainer` needs from the continual run, and nothing more."""

    extra_loss: Callable[[Any, dict[str, Any]], torch.Tensor | None]
    """The CL algorithm's loss term for ``(model, inputs)`` of the current domain, or ``None``."""
    loss_guard: LossGuard
    counts: Any
    """Where ``passes_without_signal`` and ``nonfinite_losses`` are counted (the run record)."""
    on_step_end: Callable[[], None]
    """After every optimizer step (the run's step count and the algorithm's step hook)."""
    on_save: Callable[[Path], None]
    """After TRL wrote a mid-domain checkpoint folder (the run completes it with its state)."""
    on_log: Callable[[dict[str, Any]], None]
    """Each row TRL adds to its log history (with its ``step``), as TRL logs it."""
    where: Callable[[], str]
    """Where training is, for messages."""
    sync_weights: Callable[[], None] | None = None
    """Loads the trained weights into a sampling backend that keeps its own copy (vLLM)."""


class DomainGRPOTrainer(trl.GRPOTrainer):
    """TRL's GRPO trainer for one domain, plus the CL loss term and non-finite-loss protection."""

    def __init__(self, *args: Any, hooks: TrainingHooks, **kwargs: Any) -> None:
        self.hooks = hooks
        self._extra_loss_due = True
        callbacks = [*(kwargs.pop("callbacks", None) or []), _HooksCallback(self)]
        super().__init__(*args, callbacks=callbacks, **kwargs)
        if hooks.sync_weights is not None:
            # Rollouts sampled by vLLM: TRL's vLLM path without TRL's vLLM instance. TRL then
            # loads the weights into ours before each rollout_func call, and re-scores the
            # sampled tokens to apply its importance-sampling correction
            # (vllm_importance_sampling_*) for the gap between vLLM's numerics and the model's.
            self.use_vllm = True
            self.vllm_generation = _WeightSync(hooks.sync_weights)
            self._last_loaded_step = -1
        self._ratio_due: dict[str, Any] | None = None
        """The micro-batch whose sampling correction the next log-prob pass computes."""
        self._correction_stats = sampling_correction.CorrectionStats()

    def _correction_from_loss(self) -> bool:
        """TRL's sampling correction is on and one generation feeds one optimizer step, so the
        loss's forward can give the correction's log-probs
        (:mod:`~tau2.continual_learning.grpo.sampling_correction`)."""
        generate_every = self.args.steps_per_generation * self.num_iterations
        return (
            self.use_vllm
            and self.vllm_importance_sampling_correction
            and self.args.gradient_accumulation_steps % generate_every == 0
        )

    def _generate_and_score_completions(self, inputs: Any) -> Any:  # type: ignore[override]
        """TRL's, without its re-scoring pass where the loss's forward gives the correction."""
        if not self._correction_from_loss():
            return super()._generate_and_score_completions(inputs)
        self.vllm_importance_sampling_correction = False
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self.vllm_importance_sampling_correction = True

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:  # type: ignore[override]
        """TRL's loss; the sampling correction of a batch generated without TRL's re-scoring
        pass is computed from this loss's own log-prob pass (before TRL reads it)."""
        if "importance_sampling_ratio" not in inputs and self._correction_from_loss():
            self._ratio_due = inputs
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._ratio_due = None

    def _add_sampling_correction(self, logps: torch.Tensor) -> None:
        inputs, self._ratio_due = self._ratio_due, None
        assert inputs is not None
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        sampled = inputs["sampling_per_token_logps"]
        mode = self.vllm_importance_sampling_mode
        ratio = sampling_correction.importance_ratio(
            logps.detach(),
            sampled,
            mask,
            mode,
            self.vllm_importance_sampling_clip_min,
            self.vllm_importance_sampling_clip_max,
        )
        inputs["importance_sampling_ratio"] = ratio
        self._correction_stats.add(logps.detach(), sampled, mask, ratio, mode)

    def _log_correction(self) -> None:
        """The step's correction figures into TRL's metrics (logged after the step)."""
        for name, value in self._correction_stats.flush().items():
            self._metrics["train"][name].append(value)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
        """TRL's loss of one micro-batch; the CL term joins the first micro-batch of each
        optimizer step only, so its weight per update does not depend on micro-batching."""
        hooks = self.hooks
        if self._without_signal(inputs):
            loss = zero_loss(model)
            hooks.counts.passes_without_signal += 1
        else:
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self._extra_loss_due:
            self._extra_loss_due = False
            extra = hooks.extra_loss(model, inputs)
            if extra is not None:
                loss = loss + extra
        return hooks.loss_guard.check(loss, model, hooks.where())

    def _without_signal(self, inputs: dict[str, Any]) -> bool:
        """Every advantage of the micro-batch is zero and nothing else enters TRL's loss (no KL
        term, no auxiliary loss): its loss and gradients are exactly zero, so the forward and
        backward passes, most of a step's cost when a policy solves or fails every task of a
        group, can be left out. Zero gradients still reach every trainable parameter, so the
        optimizer step is the one the full pass would have taken."""
        return (
            self.beta == 0.0
            and not self.aux_loss_enabled
            and not bool(torch.count_nonzero(inputs["advantages"]))
        )

    def _prepare_inputs(self, generation_batch: Any) -> Any:  # type: ignore[override]
        """TRL's, with whole groups shuffled instead of rows where ``shared_prefix`` is on and a
        micro-batch holds more than one sequence, so a group's rows share their passes
        (:func:`~tau2.continual_learning.grpo.shared_prefix.shuffle_groups`). TRL offers no
        option for the shuffle; its module-level function is swapped for this call only."""
        if not (self.args.shared_prefix and self.args.per_device_train_batch_size > 1):
            return super()._prepare_inputs(generation_batch)
        module = sys.modules[trl.GRPOTrainer.__module__]
        rows_shuffle = module.shuffle_sequence_dict
        module.shuffle_sequence_dict = lambda batch: shared_prefix.shuffle_groups(
            batch, self.num_generations
        )
        try:
            return super()._prepare_inputs(generation_batch)
        finally:
            module.shuffle_sequence_dict = rows_shuffle

    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        """TRL's per-token log-probs and entropies, each distinct prompt of the batch encoded
        once (:mod:`~tau2.continual_learning.grpo.shared_prefix`) where ``shared_prefix`` is on;
        TRL's own pass for multimodal inputs, an MoE auxiliary loss or an unsupported model.
        Inside a loss that owes its sampling correction, the correction is added from them.
        On a CPU, TRL's fused LM head works in tiles sized for the caches
        (:mod:`~tau2.continual_learning.grpo.lm_head_tiles`)."""
        with lm_head_tiles.cpu_tiles(self.accelerator.device):
            result = self._logps_and_entropies(*args, **kwargs)
        if self._ratio_due is not None:
            self._add_sampling_correction(result[0])
        return result

    def _logps_and_entropies(
        self,
        model,
        input_ids,
        attention_mask,
        logits_to_keep,
        batch_size=None,
        compute_entropy=False,
        compute_aux_loss=False,
        **multimodal,
    ):
        backbone = None
        text_only = all(value is None for value in multimodal.values())
        if self.args.shared_prefix and not compute_aux_loss and text_only:
            backbone = shared_prefix.prefix_backbone(self.accelerator.unwrap_model(model))
        if backbone is not None:
            with self.accelerator.autocast():
                shared = shared_prefix.per_token_logps_and_entropies(
                    model,
                    backbone,
                    input_ids,
                    attention_mask,
                    logits_to_keep,
                    compute_entropy=compute_entropy,
                    batch_size=batch_size,
                )
            if shared is not None:
                return (*shared, None)
        return super()._get_per_token_logps_and_entropies(
            model,
            input_ids,
            attention_mask,
            logits_to_keep,
            batch_size,
            compute_entropy,
            compute_aux_loss,
            **multimodal,
        )


class _WeightSync:
    """What TRL calls on its vLLM generation object before rollouts: the backend's sync."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync_weights = sync


def zero_loss(model: Any) -> torch.Tensor:
    """A zero loss whose backward gives every trainable parameter a zero gradient."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.stack([p.sum() for p in params]).sum() * 0.0


class _HooksCallback(TrainerCallback):
    """TRL's step, save and log events forwarded to the hooks; TRL's own save at a domain's last
    step is dropped (the domain-end checkpoint that follows supersedes it)."""

    def __init__(self, trainer: DomainGRPOTrainer) -> None:
        self.trainer = trainer
        self.hooks = trainer.hooks

    def on_step_begin(self, args, state, control, **kwargs):
        self.trainer._extra_loss_due = True
        self.hooks.loss_guard.begin_step()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.hooks.loss_guard.before_optimizer_step(self.trainer.model, self.hooks.where()):
            self.hooks.counts.nonfinite_losses += 1

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer._log_correction()
        self.hooks.on_step_end()
        if state.global_step >= state.max_steps:
            control.should_save = False

    def on_save(self, args, state, control, **kwargs):
        self.hooks.on_save(Path(args.output_dir) / f"checkpoint-{state.global_step}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.hooks.on_log({**(logs or {}), "step": state.global_step})
