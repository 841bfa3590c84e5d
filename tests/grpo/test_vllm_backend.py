"""A continual run whose rollouts, evaluations and probes are sampled by one vLLM engine."""

from __future__ import annotations

import vllm  # noqa: F401  (a dev dependency: the README's test install has its CPU build)

from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.grpo.rollouts import build_user
from tau2.continual_learning.grpo.trainer import REWARD_FIELD
from tau2.continual_learning.rollout import HFPolicy, VLLMPolicy
from tau2.continual_learning.tiny_model import build_tiny_model


class AlternatingRewards(GRPOTrainer):
    """Every group with signal (the random model earns no reward), so every step has a loss."""

    def rollout(self, prompts, engine=None):
        out = super().rollout(prompts, engine)
        out[REWARD_FIELD] = [float(i % 2) for i in range(len(out[REWARD_FIELD]))]
        return out


def test_a_two_domain_lora_run_samples_with_one_engine_that_follows_training(
    tmp_path, tokenizer, tiny_run, monkeypatch
):
    built = []
    original = VLLMPolicy.from_model.__func__

    def counted(cls, *args, **kwargs):
        built.append(args)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(VLLMPolicy, "from_model", classmethod(counted))
    config = GRPOConfig(
        output_dir=str(tmp_path),
        sampling_backend="vllm",
        vllm_kv_cache_gb=0.125,
        **{**tiny_run, "use_peft": True, "warm_start_demos_per_domain": 2},
    )
    # head size 32: what vLLM's CPU attention supports
    model = build_tiny_model(tokenizer, hidden_size=64, num_heads=2)
    trainer = AlternatingRewards(config, model=model, tokenizer=tokenizer)
    try:
        metrics = trainer.train()
        policy = trainer.rollouts.policy
        assert isinstance(policy, VLLMPolicy) and policy.follow is trainer.model
        # a user simulated by the policy model is its base, sampled apart from the trained one
        user_config = GRPOConfig(output_dir=str(tmp_path), user_mode="hf")
        user = build_user(user_config, trainer.model, tokenizer)
        assert isinstance(user.backend, HFPolicy) and user.backend is not policy
        assert len(built) == 1  # one engine for the whole run, not one per domain
        assert metrics["sampling_backend"] == "vllm"
        # loaded at the start and again after each domain's warm start (the weights changed)
        assert metrics["weight_syncs"] >= 1 + len(config.domains)
        assert len(metrics["accuracy_matrix"]) == len(config.domains)
        steps = [r for r in trainer.log_rows if "sampling/importance_sampling_ratio/mean" in r]
        assert len(steps) == config.max_steps_per_domain * len(config.domains)
        for row in steps:  # the sampling correction ran, and vLLM sampled what the model
            # would: sequence ratios stay within 1%
            assert abs(float(row["sampling/importance_sampling_ratio/mean"]) - 1) < 1e-2
    finally:
        trainer.close()
