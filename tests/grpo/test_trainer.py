"""The continual GRPO trainer end to end on real skill tasks with the tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.continual_learning import AdaptiveReplayCL, CLAlgorithm, ReplayCL
from tau2.continual_learning.grpo.evaluation import pass_at_one
from tau2.continual_learning.grpo.trainer import NonFiniteLossError
from tau2.continual_learning.metrics import compute_cl_metrics


@pytest.fixture
def small_config(tmp_path, tiny_run):
    def make(**overrides) -> GRPOConfig:
        settings = {**tiny_run, "max_steps_per_domain": 2, "seed": 0, **overrides}
        return GRPOConfig(output_dir=str(tmp_path), **settings)

    return make


def test_seed_replay_example_runs_and_writes_outputs(tmp_path, small_config, tokenizer, tiny_model):
    trainer = GRPOTrainer(small_config(), model=tiny_model, tokenizer=tokenizer)
    trainer.cl_algorithm = ReplayCL(
        replay_ratio=0.5, replay_strategy="high_reward", min_buffer_size=1, replay_all_domains=True
    )
    metrics = trainer.train()
    stats = trainer.cl_algorithm.get_statistics()
    assert stats["total_replay_samples"] == 2  # one replayed group per retail->telecom step
    assert stats["replay_samples_per_domain"] == {"retail": 2}
    assert stats["replay_ratio"] == 0.5
    assert set(stats["buffer_sizes"]) == {"retail", "telecom"}
    assert len(metrics["accuracy_matrix"]) == 2 and len(metrics["baseline"]) == 2
    expected = compute_cl_metrics(metrics["accuracy_matrix"], metrics["baseline"])
    for key in ("ACC", "BWT", "FWT", "forgetting"):  # the CL metrics of the run's own scores
        assert metrics[key] == expected[key], key
    assert metrics["wall_time_s"] > 0
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["accuracy_matrix"] == metrics["accuracy_matrix"]
    assert (tmp_path / "accuracy_matrix.png").stat().st_size > 0
    assert "domain" in (tmp_path / "training_log.csv").read_text().splitlines()[0]
    assert (tmp_path / "checkpoints" / "latest").is_file()
    assert trainer.global_step == 4


def test_adaptive_replay_example_constructs(small_config, tokenizer, tiny_model):
    config = small_config(cl_algorithm="adaptive_replay", replay_ratio=0.2)
    trainer = GRPOTrainer(config, model=tiny_model, tokenizer=tokenizer)
    assert isinstance(trainer.cl_algorithm, AdaptiveReplayCL)
    trainer.cl_algorithm = AdaptiveReplayCL(
        initial_replay_ratio=0.2,
        max_replay_ratio=0.5,
        min_replay_ratio=0.1,
        adaptation_rate=0.1,
        forgetting_threshold=0.1,
    )
    assert trainer.cl_algorithm._trainer is trainer.view  # the one channel to the trainer


class NaNLossCL(CLAlgorithm):
    """Injects a NaN into the loss on chosen optimisation steps."""

    def __init__(self, nan_calls):
        super().__init__()
        self.nan_calls = set(nan_calls)
        self.calls = 0

    def extra_loss(self, model, batch, current_domain):
        self.calls += 1
        return torch.tensor(float("nan")) if self.calls in self.nan_calls else None


def test_a_nan_loss_skips_the_update_and_is_counted(small_config, tokenizer, tiny_model):
    config = small_config(domains=["telecom"], max_steps_per_domain=3)
    trainer = GRPOTrainer(config, model=tiny_model, tokenizer=tokenizer)
    trainer.cl_algorithm = NaNLossCL(nan_calls={2})
    metrics = trainer.train()
    assert metrics["nonfinite_losses"] == 1
    assert trainer.global_step == 3  # the run went on after the skipped update
    assert all(torch.isfinite(p).all() for p in tiny_model.parameters())


def test_consecutive_nan_losses_stop_the_run(small_config, tokenizer, tiny_model):
    config = small_config(
        domains=["telecom"], max_steps_per_domain=3, max_consecutive_nonfinite_losses=2
    )
    trainer = GRPOTrainer(config, model=tiny_model, tokenizer=tokenizer)
    trainer.cl_algorithm = NaNLossCL(nan_calls={1, 2, 3, 4})
    with pytest.raises(NonFiniteLossError, match="2 consecutive non-finite losses"):
        trainer.train()


@pytest.mark.parametrize("flag", ["gradient_checkpointing", "activation_checkpointing"])
def test_gradient_checkpointing_flag_is_honoured(small_config, tokenizer, tiny_model, flag):
    seen = []

    class Watch(CLAlgorithm):
        def post_step_hook(self, trainer, domain):
            seen.append(trainer.model.is_gradient_checkpointing)  # both transformers 5.19 and 5.24

    config = small_config(domains=["telecom"], max_steps_per_domain=1, **{flag: True})
    assert config.activation_checkpointing is True
    trainer = GRPOTrainer(config, model=tiny_model, tokenizer=tokenizer, cl_algorithm=Watch())
    trainer.train()
    assert seen == [True]


def test_scores_carry_95_percent_intervals(small_config, tokenizer, tiny_model):
    trainer = GRPOTrainer(
        small_config(domains=["telecom"], max_steps_per_domain=1),
        model=tiny_model,
        tokenizer=tokenizer,
    )
    metrics = trainer.train()
    (row,) = metrics["score_intervals"]
    (score,) = row
    assert score["n"] == 2 and score["mean"] == metrics["accuracy_matrix"][0][0]
    wilson = pass_at_one(trainer.last_eval_episodes["telecom"])  # of the episodes scored last
    assert (score["low"], score["mean"], score["high"]) == (wilson.low, wilson.mean, wilson.high)
    assert score["high"] > score["low"]  # two episodes leave the score uncertain
