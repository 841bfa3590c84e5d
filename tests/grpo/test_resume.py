"""Checkpoints: a run interrupted mid-domain and resumed reaches the uninterrupted result."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.continual_learning import ReplayCL
from tau2.continual_learning.grpo.config import ConfigError
from tau2.continual_learning.tiny_model import build_tiny_model

RESUME = dict(max_steps_per_domain=3, save_steps=1, seed=3, learning_rate=1e-3)
MOVING = dict(  # guided groups: every GRPO step of the tiny model has a learning signal
    guided_groups=True, batch_size_per_gpu=1, micro_batch_size=None, max_steps_per_domain=2
)


class Interrupted(Exception):
    """Stands in for the process being killed."""


class CrashingReplayCL(ReplayCL):
    """Stands in for a killed process: raises after a given global step."""

    crash_at = 5

    def post_step_hook(self, trainer, domain):
        super().post_step_hook(trainer, domain)
        if trainer.global_step == self.crash_at:
            raise Interrupted


class SnapshotReplayCL(ReplayCL):
    """Leaves what a process killed after step ``snapshot_at`` would have left: a copy of the
    run's checkpoints at that moment, in ``snapshot_to`` (the run itself goes on)."""

    snapshot_at = 4
    snapshot_to: Path

    def post_step_hook(self, trainer, domain):
        super().post_step_hook(trainer, domain)
        if trainer.global_step == self.snapshot_at:
            checkpoints = Path(trainer.config.output_dir) / "checkpoints"
            shutil.copytree(checkpoints, self.snapshot_to / "checkpoints")


def run(tmp_path, tokenizer, algorithm_cls, settings, resume=False, **extra):
    config = GRPOConfig(output_dir=str(tmp_path), **{**settings, **RESUME, **extra})
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
        trainer.metrics()["phase_scores"],
        trainer.trajectory_buffer.sizes(),
        trainer.cl_algorithm.get_statistics(),
    )


def differ(a, b):
    return any(not torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_resume_mid_domain_matches_uninterrupted_run(tmp_path, tokenizer, tiny_run):
    """Weights, optimizer state, buffer, algorithm and RNGs come back: the step after the resume
    (which moves the weights) is the uninterrupted run's."""
    reference = run(tmp_path / "a", tokenizer, SnapshotReplayCL, tiny_run, **MOVING)
    reference.cl_algorithm.snapshot_to = tmp_path / "b"  # killed after step 4 of 4
    reference.train()
    assert differ(reference.model, build_tiny_model(tokenizer, seed=1))  # training moved them

    latest = (tmp_path / "b" / "checkpoints" / "latest").read_text()
    assert latest == "domain-01-telecom/checkpoint-1"  # mid-domain: step 3 of 4
    saved = load_file(tmp_path / "b" / "checkpoints" / latest / "model.safetensors")

    resumed = run(tmp_path / "b", tokenizer, ReplayCL, tiny_run, resume=True, **MOVING)
    assert resumed.domain_index == 1 and resumed.global_step == 3
    resumed.train()

    assert resumed.global_step == reference.global_step == 4
    assert signature(resumed) == signature(reference)
    weights = dict(resumed.model.named_parameters())
    assert any(not torch.equal(weights[k], v) for k, v in saved.items())  # step 4 moved them
    for (name, a), b in zip(
        reference.model.named_parameters(), resumed.model.parameters(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name


def test_resume_rejects_a_foreign_checkpoint(tmp_path, tokenizer, tiny_run):
    trainer = run(tmp_path, tokenizer, ReplayCL, tiny_run)
    with pytest.raises(FileNotFoundError, match="not a tau2-continual checkpoint"):
        trainer.load_checkpoint(tmp_path)


def branch_run(folder, tokenizer, settings, algorithm, **extra):
    config = GRPOConfig(
        output_dir=str(folder),
        cl_algorithm=algorithm,
        save_total_limit=2,  # keep end-of-domain-01 for the branch
        probe_interval=1,
        # the warm start moves the model; 2 steps a domain keep the test short
        **{
            **settings,
            **RESUME,
            "warm_start_demos_per_domain": 2,
            "max_steps_per_domain": 2,
            **extra,
        },
    )
    return GRPOTrainer(config, model=build_tiny_model(tokenizer, seed=1), tokenizer=tokenizer)


def test_a_branch_from_another_algorithms_domain_end_equals_a_full_run(
    tmp_path, tokenizer, tiny_run
):
    full = branch_run(tmp_path / "full", tokenizer, tiny_run, "adaptive_replay")
    full.train()
    trunk = branch_run(tmp_path / "trunk", tokenizer, tiny_run, "sequential")
    trunk.train()

    branched = branch_run(tmp_path / "branch", tokenizer, tiny_run, "adaptive_replay")
    end_of_first = tmp_path / "trunk" / "checkpoints" / "end-of-domain-01"
    with pytest.raises(ValueError, match=r"written by 'sequential'.*branch=True"):
        branched.load_checkpoint(end_of_first)
    probe = branched.probe
    probed_with = []  # the weights each probe scored with

    def recording_probe(domains, num_tasks):
        probed_with.append([p.detach().clone() for p in branched.model.parameters()])
        return probe(domains, num_tasks)

    branched.probe = recording_probe
    branched.load_checkpoint(end_of_first, branch=True)
    # the fresh algorithm saw the first domain end: its probe is adaptive replay's reference,
    # scored with the checkpoint's weights (not the fresh model's the branch started from)
    assert set(branched.cl_algorithm.reference_scores) == {"retail"} and len(probed_with) == 1
    for probed, loaded in zip(probed_with[0], branched.model.parameters(), strict=True):
        assert torch.equal(probed, loaded)
    assert differ(branched.model, build_tiny_model(tokenizer, seed=1))
    assert branched.domain_index == 1 and branched.global_step == 2

    # the config field (the command line's flag) loads the same way when the run starts
    configured = branch_run(
        tmp_path / "configured",
        tokenizer,
        tiny_run,
        "adaptive_replay",
        branch_from_checkpoint=str(end_of_first),
    )
    configured.train()
    stats = configured.cl_algorithm.get_statistics()
    assert stats["total_replay_samples"] > 0 and stats["ratio_history"]  # it replayed, probed
    assert signature(configured) == signature(full)
    assert configured.metrics()["cl_algorithm"] == "adaptive_replay"

    assert differ(full.model, build_tiny_model(tokenizer, seed=1))  # training moved the weights
    assert differ(full.model, trunk.model)  # and domain 2 depends on the algorithm (replayed demos)
    for (name, a), b in zip(
        full.model.named_parameters(), configured.model.parameters(), strict=True
    ):
        assert torch.equal(a, b), name


def test_a_branch_starts_at_a_domain_end(tmp_path, tokenizer, tiny_run):
    crashed = run(tmp_path, tokenizer, CrashingReplayCL, tiny_run)
    with pytest.raises(Interrupted):
        crashed.train()
    resumed = run(tmp_path, tokenizer, ReplayCL, tiny_run)
    with pytest.raises(ValueError, match="mid-domain: a branch starts at a domain end"):
        resumed.load_checkpoint(tmp_path / "checkpoints", branch=True)


def test_a_branch_and_a_resume_together_are_refused(tmp_path, tiny_run):
    with pytest.raises(ConfigError, match=r"branch_from_checkpoint=.*resume_from_checkpoint"):
        GRPOConfig(
            output_dir=str(tmp_path),
            branch_from_checkpoint="a/checkpoints/end-of-domain-01",
            resume_from_checkpoint="b/checkpoints",
            **tiny_run,
        )
