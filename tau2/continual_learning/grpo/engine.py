"""TRL's ``GRPOTrainer`` as the GRPO engine of one domain, with what continual training adds.

TRL computes advantages, the clipped policy loss, KL, importance-sampling correction and the
optimizer step; this module adds only

* :class:`Engine`: the CL algorithm's ``extra_loss`` (once per optimizer step), the
  :class:`LossGuard`, and no forward/backward pass for a micro-batch without learning signal;
* :class:`LossGuard`: a NaN/inf micro-batch loss skips (and counts) its whole update; ``K`` in a
  row stop the run with :class:`NonFiniteLossError`;
* :class:`StepCallback`: TRL's step and save events forwarded to the continual trainer;
* :func:`tau2_reward`: the reward function TRL calls, returning what tau2's evaluators gave.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import trl
from transformers import TrainerCallback

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
        self.skipped = 0
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

    def before_optimizer_step(self, model: Any, where: str) -> None:
        """Drop the gradients of a marked step (the optimizer then leaves every parameter
        alone), count it, and raise after ``limit`` such steps in a row."""
        skip, self._step_nonfinite = self._step_nonfinite, False
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([float(skip)], device=next(model.parameters()).device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            skip = bool(flag.item())
        if not skip:
            self.consecutive = 0
            return
        self.skipped += 1
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


class Engine(trl.GRPOTrainer):
    """TRL's GRPO trainer plus the CL loss term and non-finite-loss protection."""

    def __init__(self, *args: Any, continual: Any, **kwargs: Any) -> None:
        self.continual = continual
        self._extra_loss_due = True
        super().__init__(*args, **kwargs)
        policy = continual.rollouts.policy
        if hasattr(policy, "sync"):
            # Rollouts sampled by vLLM: TRL's vLLM path without TRL's engine. TRL then loads the
            # weights into ours before each rollout_func call, and re-scores the sampled tokens
            # to apply its importance-sampling correction (vllm_importance_sampling_*) for the
            # gap between vLLM's numerics and the trained model's.
            self.use_vllm = True
            self.vllm_generation = _WeightSync(policy)
            self._last_loaded_step = -1

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[override]
        """TRL's loss of one micro-batch; the CL term joins the first micro-batch of each
        optimizer step only, so its weight per update does not depend on micro-batching."""
        if self._without_signal(inputs):
            loss = zero_loss(model)
            self.continual.passes_without_signal += 1
        else:
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        continual = self.continual
        if self._extra_loss_due:
            self._extra_loss_due = False
            extra = continual.cl_algorithm.extra_loss(model, inputs, continual.current_domain)
            if extra is not None:
                loss = loss + extra
        return continual.loss_guard.check(loss, model, continual.where())

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


class _WeightSync:
    """What TRL calls on its vLLM generation object before rollouts: our engine's ``sync``."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def sync_weights(self) -> None:
        self.policy.sync()


def zero_loss(model: Any) -> torch.Tensor:
    """A zero loss whose backward gives every trainable parameter a zero gradient."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.stack([p.sum() for p in params]).sum() * 0.0


class StepCallback(TrainerCallback):
    """Forwards TRL's step and save events to the continual trainer; TRL's own save at a
    domain's last step is dropped (the domain-end checkpoint that follows supersedes it)."""

    def __init__(self, continual: Any, engine: Engine | None = None) -> None:
        self.continual = continual
        self.engine = engine

    def on_step_begin(self, args, state, control, **kwargs):
        if self.engine is not None:
            self.engine._extra_loss_due = True
        self.continual.loss_guard.begin_step()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.continual.loss_guard.before_optimizer_step(
            self.continual.model, self.continual.where()
        )

    def on_step_end(self, args, state, control, **kwargs):
        self.continual.on_step_end()
        if state.global_step >= state.max_steps:
            control.should_save = False

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self.continual.checkpointer.complete_mid_domain(folder)
