"""Checkpoints: a run interrupted mid-domain and resumed reaches the uninterrupted result."""

from __future__ import annotations

import pytest
import torch

from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.continual_learning import ReplayCL
from tau2.continual_learning.tiny_model import build_tiny_model

RESUME = dict(max_steps_per_domain=3, save_steps=1, seed=3, learning_rate=1e-3)


class Interrupted(Exception):
    """Stands in for the process being killed."""


class CrashingReplayCL(ReplayCL):
    """Stands in for a killed process: raises after a given global step."""

    crash_at = 5

    def post_step_hook(self, trainer, domain):
        super().post_step_hook(trainer, domain)
        if trainer.global_step == self.crash_at:
            raise Interrupted


def run(tmp_path, tokenizer, algorithm_cls, settings, resume=False):
    config = GRPOConfig(output_dir=str(tmp_path), **{**settings, **RESUME})
    trainer = GRPOTrainer(config, model=build_tiny_model(tokenizer, seed=1), tokenizer=tokenizer)
    trainer.cl_algorithm = algorithm_cls(replay_ratio=0.5, min_buffer_size=1)
    if resume:
        trainer.load_checkpoint(tmp_path / "checkpoints")
    return trainer


def signature(trainer):
    rows = [
        (r["global_step"], r.get("reward"), r.get("completions/mean_length"))
        for r in trainer.log_rows
        if "reward" in r
    ]
    return (
        rows,
        trainer.accuracy_matrix,
        trainer.trajectory_buffer.sizes(),
        trainer.cl_algorithm.get_statistics(),
    )


def test_resume_mid_domain_matches_uninterrupted_run(tmp_path, tokenizer, tiny_run):
    reference = run(tmp_path / "a", tokenizer, ReplayCL, tiny_run)
    reference.train()

    crashed = run(tmp_path / "b", tokenizer, CrashingReplayCL, tiny_run)
    with pytest.raises(Interrupted):
        crashed.train()
    latest = (tmp_path / "b" / "checkpoints" / "latest").read_text()
    assert latest.startswith("domain-01-telecom/checkpoint-")  # mid-domain checkpoint

    resumed = run(tmp_path / "b", tokenizer, ReplayCL, tiny_run, resume=True)
    assert resumed.domain_index == 1 and resumed.global_step == 4
    resumed.train()

    assert resumed.global_step == reference.global_step == 6
    assert signature(resumed) == signature(reference)
    for (name, a), b in zip(
        reference.model.named_parameters(), resumed.model.parameters(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name


def test_resume_rejects_a_foreign_checkpoint(tmp_path, tokenizer, tiny_run):
    trainer = run(tmp_path, tokenizer, ReplayCL, tiny_run)
    with pytest.raises(FileNotFoundError, match="not a tau2-continual checkpoint"):
        trainer.load_checkpoint(tmp_path)
