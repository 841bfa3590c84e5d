"""The correction for a sampler's numerics, taken from the loss's own forward pass: the update
TRL's re-scoring pass gives, without that pass."""

from __future__ import annotations

import math

import pytest
import torch

from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.grpo import trl_trainer
from tau2.continual_learning.grpo.sampling_correction import CorrectionStats, importance_ratio
from tau2.continual_learning.grpo.trainer import REWARD_FIELD
from tau2.continual_learning.rollout import HFPolicy
from tau2.continual_learning.tiny_model import build_tiny_model

LOGPS = torch.tensor([[-1.0, -2.0, -0.5], [-0.2, -0.1, -3.0]])
SAMPLED = torch.tensor([[-1.5, -2.0, float("nan")], [-0.2, -1.6, -3.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("token_truncate", [[math.exp(0.5), 1.0, 1.0], [1.0, 2.0, 1.0]]),
        ("token_mask", [[math.exp(0.5), 1.0, 1.0], [1.0, 0.0, 1.0]]),
        ("sequence_truncate", [[math.exp(0.5)], [2.0]]),
        ("sequence_mask", [[math.exp(0.5)], [0.0]]),
    ],
)
def test_importance_ratio_bounds_each_mode(mode, expected):
    """Gaps of 0.5 and 1.5 nats bounded at 2: NaN (unscored) and masked tokens count as
    agreement; truncation clamps, masking zeroes."""
    ratio = importance_ratio(LOGPS, SAMPLED, MASK, mode, clip_min=None, clip_max=2.0)
    torch.testing.assert_close(ratio, torch.tensor(expected))
    stats = CorrectionStats()
    stats.add(LOGPS, SAMPLED, MASK, ratio, mode)
    stats.add(LOGPS[:1], SAMPLED[:1], MASK[:1], ratio[:1], mode)
    figures = stats.flush()
    assert figures["sampling/sampling_logp_difference/max"] == pytest.approx(1.5)
    assert figures["sampling/importance_sampling_ratio/max"] == pytest.approx(
        max(map(max, expected))
    )
    assert stats.flush() == {}
    with pytest.raises(ValueError, match="mode"):
        importance_ratio(LOGPS, SAMPLED, MASK, "token", None, None)


class OffSampler(GRPOTrainer):
    """Rewards that give every group signal, and sampling log-probs that disagree with the
    model's by a different amount per row (as a sampler with other numerics would), so the
    correction changes the update and masks some rows."""

    def rollout(self, prompts, engine=None):
        out = super().rollout(prompts, engine)
        out[REWARD_FIELD] = [float(i % 2) for i in range(len(out[REWARD_FIELD]))]
        out["logprobs"] = [
            [value + 0.15 * (i % 4 - 1) for value in row] for i, row in enumerate(out["logprobs"])
        ]
        return out


@pytest.mark.parametrize("micro_batch_size", [1, 2])
def test_the_correction_from_the_loss_gives_trls_update_without_its_pass(
    tmp_path, tokenizer, tiny_run, monkeypatch, micro_batch_size
):
    # a sampling backend with a weight sync is what turns TRL's correction on (as vLLM does)
    monkeypatch.setattr(HFPolicy, "sync", lambda self: False, raising=False)
    passes = []
    original = trl_trainer.DomainGRPOTrainer._logps_and_entropies

    def counted(self, *args, **kwargs):
        passes.append(torch.is_grad_enabled())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trl_trainer.DomainGRPOTrainer, "_logps_and_entropies", counted)

    def one_step(name: str, **settings) -> tuple[dict[str, torch.Tensor], list[dict]]:
        settings = {**tiny_run, "domains": ["telecom"], "max_steps_per_domain": 1, **settings}
        settings.update(eval_tasks_per_domain=1, bf16=False, learning_rate=1e-3, seed=0)
        settings.update(batch_size_per_gpu=4, replay_ratio=0.0, micro_batch_size=micro_batch_size)
        config = GRPOConfig(output_dir=str(tmp_path / name), **settings)
        trainer = OffSampler(config, model=build_tiny_model(tokenizer, seed=1), tokenizer=tokenizer)
        trainer.train()
        return trainer.model.state_dict(), trainer.log_rows

    from_loss, rows = one_step("from_loss")
    assert passes and all(passes)  # only the loss's passes: no re-scoring pass without grad
    logged = [r for r in rows if "sampling/importance_sampling_ratio/mean" in r]
    assert logged and float(logged[0]["sampling/importance_sampling_ratio/min"]) == 0.0
    passes.clear()
    monkeypatch.setattr(trl_trainer.DomainGRPOTrainer, "_correction_from_loss", lambda s: False)
    rescored, _ = one_step("rescored")
    assert not all(passes)  # TRL's own path: its re-scoring pass ran
    uncorrected, _ = one_step("uncorrected", vllm_importance_sampling_correction=False)
    initial = build_tiny_model(tokenizer, seed=1).state_dict()
    moved = differs = 0.0
    for name, value in from_loss.items():
        torch.testing.assert_close(value, rescored[name], rtol=0, atol=5e-6, msg=name)
        moved = max(moved, (value - initial[name]).abs().max().item())
        differs = max(differs, (value - uncorrected[name]).abs().max().item())
    assert moved > 1e-4  # the step updated the weights
    assert differs > 1e-4  # and the correction changed the update
