"""Micro-batching: one rollout still feeds exactly one optimizer step, with the same update."""

from __future__ import annotations

import pytest
import torch

from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.continual_learning import CLAlgorithm, ReplayCL
from tau2.continual_learning.grpo.trainer import REWARD_FIELD
from tau2.continual_learning.tiny_model import build_tiny_model


class AlternatingRewardTrainer(GRPOTrainer):
    """Real rollouts, rewards 0, 1, 0, 1 ... so every GRPO group has a winner and a loser.

    The random tiny model earns no tau2 reward; equal rewards give zero advantages, a zero
    gradient, and a comparison of updates that could not fail.
    """

    def rollout(self, prompts, engine=None):
        out = super().rollout(prompts, engine)
        out[REWARD_FIELD] = [float(i % 2) for i in range(len(out[REWARD_FIELD]))]
        return out


class RecordingReplayCL(ReplayCL):
    """ReplayCL that records each optimizer step's domain and each ``extra_loss`` call."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.steps: list[str] = []
        self.extra_loss_calls = 0

    def post_step_hook(self, trainer, domain):
        super().post_step_hook(trainer, domain)
        self.steps.append(domain)

    def extra_loss(self, model, batch, current_domain):
        self.extra_loss_calls += 1
        return None


class RecordingTrainer(AlternatingRewardTrainer):
    """Records how many prompts each ``rollout_func`` call receives, per domain (with
    alternating rewards, so every micro-batch has a learning signal)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rollout_sizes: dict[str, list[int]] = {}

    def rollout(self, prompts, engine=None):
        self.rollout_sizes.setdefault(self.current_domain, []).append(len(prompts))
        return super().rollout(prompts, engine)


def one_step(tmp_path, tokenizer, tiny_run, cl_algorithm=None, **overrides) -> GRPOTrainer:
    """One fp32 GRPO step on telecom with alternating rewards, from fixed seeds."""
    settings = {
        **tiny_run,
        "domains": ["telecom"],
        "max_steps_per_domain": 1,
        "eval_tasks_per_domain": 1,
        "bf16": False,  # bf16 autocast rounds each micro-batch's gradient separately
        "learning_rate": 1e-3,
        "seed": 0,
        **overrides,
    }
    config = GRPOConfig(output_dir=str(tmp_path), **settings)
    model = build_tiny_model(tokenizer, seed=1)
    trainer = AlternatingRewardTrainer(config, model=model, tokenizer=tokenizer)
    if cl_algorithm is not None:
        trainer.cl_algorithm = cl_algorithm
    trainer.train()
    return trainer


def test_micro_batches_give_the_update_of_the_whole_batch(tmp_path, tokenizer, tiny_run):
    initial = build_tiny_model(tokenizer, seed=1).state_dict()
    whole = one_step(tmp_path / "whole", tokenizer, tiny_run, micro_batch_size=None)
    split = one_step(tmp_path / "split", tokenizer, tiny_run, micro_batch_size=2)
    assert whole.config.steps_per_generation == 1 and split.config.steps_per_generation == 2
    moved = 0.0
    for name, value in whole.model.state_dict().items():
        other = split.model.state_dict()[name]
        # float32 sums in another order; Adam's normalisation can amplify that to ~1e-6 in
        # weights whose gradients are tiny, against steps of about lr = 1e-3 (see below)
        assert torch.allclose(value, other, rtol=0, atol=5e-6), name
        moved = max(moved, (value - initial[name]).abs().max().item())
    assert moved > 1e-4  # the step did update the weights (Adam moves them by about lr)


def test_a_non_finite_micro_batch_skips_the_whole_update(tmp_path, tokenizer, tiny_run):
    class NaNOnFirstStep(CLAlgorithm):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def extra_loss(self, model, batch, current_domain):
            self.calls += 1
            return torch.tensor(float("nan")) if self.calls == 1 else None

    initial = build_tiny_model(tokenizer, seed=1).state_dict()
    algorithm = NaNOnFirstStep()
    trainer = one_step(tmp_path, tokenizer, tiny_run, algorithm, micro_batch_size=2)
    assert algorithm.calls == 1  # once per optimizer step, not once per micro-batch
    assert trainer.nonfinite_losses == 1 and trainer.global_step == 1
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, initial[name]), name  # the finite micro-batch left no trace


def test_each_rollout_feeds_exactly_one_optimizer_step(tmp_path, tokenizer, tiny_run):
    settings = {**tiny_run, "max_steps_per_domain": 1, "eval_tasks_per_domain": 1}
    # 2 groups x 2 episodes x 2 accumulated batches = 8 episodes per step, 4 per micro-batch
    config = GRPOConfig(
        output_dir=str(tmp_path), micro_batch_size=4, gradient_accumulation_steps=2, **settings
    )
    assert config.steps_per_generation == 2
    trainer = RecordingTrainer(config, model=build_tiny_model(tokenizer), tokenizer=tokenizer)
    algorithm = RecordingReplayCL(replay_ratio=0.5, min_buffer_size=1)
    trainer.cl_algorithm = algorithm
    passes = []

    def count_training_pass(module, args, kwargs, output):
        if module.training and torch.is_grad_enabled():  # not the no-grad rollouts
            passes.append(kwargs["input_ids"].shape[0])

    trainer.model.register_forward_hook(count_training_pass, with_kwargs=True)
    trainer.train()
    assert trainer.rollout_sizes == {"retail": [8], "telecom": [8]}
    assert algorithm.steps == ["retail", "telecom"]  # one optimizer step per rollout
    assert trainer.global_step == 2
    assert passes == [4] * (2 * 2)  # 2 micro-batches of 4 sequences per optimizer step
    assert algorithm.extra_loss_calls == 2  # the CL term once per optimizer step
    # compose_batch saw the step's 4 task groups at once: 2 of them replayed on telecom
    assert trainer.view.replay_slots == 2
    assert algorithm.get_statistics()["total_replay_samples"] == 2


@pytest.mark.parametrize("micro_batch_size", [None, 2])
def test_gradient_accumulation_keeps_its_meaning(tmp_path, micro_batch_size):
    config = GRPOConfig(
        output_dir=str(tmp_path), gradient_accumulation_steps=3, micro_batch_size=micro_batch_size
    )
    assert config.episodes_per_step == 2 * 4 * 3
    assert config.gradient_accumulation_steps == 3
    micro = micro_batch_size or 8
    assert config.per_device_train_batch_size == micro
    assert config.steps_per_generation == 24 // micro
    assert config.generation_batch_size == 24
    assert config.trl_args(str(tmp_path)).gradient_accumulation_steps == 24 // micro


def test_micro_batches_without_signal_skip_their_passes(tmp_path, tokenizer, tiny_run):
    """The tiny model fails every task: all advantages are zero, so no training forward pass
    runs and the weights stay as they were (Adam moves nothing on zero gradients)."""
    settings = {**tiny_run, "domains": ["telecom"], "max_steps_per_domain": 2}
    config = GRPOConfig(output_dir=str(tmp_path), **settings)
    model = build_tiny_model(tokenizer, seed=1)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = GRPOTrainer(config, model=model, tokenizer=tokenizer)
    passes = []
    trainer.model.register_forward_hook(
        lambda module, args, output: passes.append(1) if torch.is_grad_enabled() else None
    )
    metrics = trainer.train()
    assert all(s["reward_mean"] == 0.0 for s in metrics["step_stats"])
    assert metrics["global_steps"] == 2 and passes == []
    assert metrics["passes_without_signal"] == 2 * config.steps_per_generation
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, initial[name]), name
