"""Checkpoints a user can afford: rotation, optimizer state only where resuming needs it, and
a run killed with SIGKILL at a random moment resumes to the uninterrupted result."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.continual_learning import ReplayCL
from tau2.continual_learning.tiny_model import build_tiny_model


class Interrupted(Exception):
    """Raised by a hook to stop a run the way a crash would."""


class StopAtStep7(ReplayCL):
    def post_step_hook(self, trainer, domain):
        super().post_step_hook(trainer, domain)
        if trainer.global_step == 7:  # domain 2, step 3: after its checkpoints 1 and 2
            raise Interrupted


def test_retention_keeps_one_domain_end_and_one_mid_domain_checkpoint(
    tmp_path, tokenizer, tiny_run
):
    config = GRPOConfig(output_dir=str(tmp_path), max_steps_per_domain=4, save_steps=1, **tiny_run)
    trainer = GRPOTrainer(config, model=build_tiny_model(tokenizer, seed=1), tokenizer=tokenizer)
    trainer.cl_algorithm = StopAtStep7(replay_ratio=0.5, min_buffer_size=1)
    with pytest.raises(Interrupted):
        trainer.train()
    root = tmp_path / "checkpoints"
    assert (root / "latest").read_text() == "domain-01-telecom/checkpoint-2"
    assert sorted(p.name for p in root.iterdir()) == [
        "domain-01-telecom",
        "end-of-domain-01",
        "latest",
    ]
    assert [p.name for p in (root / "domain-01-telecom").glob("checkpoint-*")] == ["checkpoint-2"]
    # the domain-end checkpoint is no longer what a resume starts from: no optimizer state
    assert not (root / "end-of-domain-01" / "optimizer.pt").exists()
    assert (root / "domain-01-telecom" / "checkpoint-2" / "buffer-rank-0.pkl").is_file()

    finished = GRPOTrainer(config, model=build_tiny_model(tokenizer, seed=1), tokenizer=tokenizer)
    finished.load_checkpoint(root)
    finished.train()
    assert sorted(p.name for p in root.iterdir()) == ["end-of-domain-02", "latest"]
    end = root / "end-of-domain-02"
    assert not (end / "optimizer.pt").exists()  # the run is complete: nothing resumes from it
    weights = load_file(str(end / "model" / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {next(finished.model.parameters()).dtype}


@pytest.mark.parametrize("reset", [False, True])
def test_a_domain_end_checkpoint_keeps_optimizer_state_while_it_is_latest(
    tmp_path, tokenizer, tiny_run, reset
):
    """Optimizer state only while a resume would continue with it: the checkpoint is ``latest``
    and the next domain carries the optimizer over (the default resets it per domain)."""
    config = GRPOConfig(
        output_dir=str(tmp_path),
        max_steps_per_domain=1,
        save_total_limit=2,
        reset_optimizer_between_domains=reset,
        **tiny_run,
    )
    trainer = GRPOTrainer(config, model=build_tiny_model(tokenizer, seed=1), tokenizer=tokenizer)
    seen = []

    class Watch(ReplayCL):
        def pre_task_hook(self, trainer, domain):
            root = tmp_path / "checkpoints"
            if (root / "latest").is_file():
                latest = root / (root / "latest").read_text()
                seen.append((latest.name, (latest / "optimizer.pt").is_file()))

    trainer.cl_algorithm = Watch(replay_ratio=0.5, min_buffer_size=1)
    trainer.train()
    assert seen == [("end-of-domain-01", not reset)]
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("end-of-domain-*"))
    assert kept == ["end-of-domain-01", "end-of-domain-02"]  # save_total_limit=2


CLI_RUN = [
    "--domains", "retail", "telecom",
    "--max_steps_per_domain", "2",
    "--save_steps", "1",
    "--batch_size_per_gpu", "2",
    "--num_samples_per_prompt", "2",
    "--eval_tasks_per_domain", "2",
    "--max_turns", "1",
    "--max_new_tokens_per_turn", "8",
    "--min_buffer_size", "1",
    "--replay_ratio", "0.5",
    "--learning_rate", "1e-3",
    "--seed", "3",
    "--warm_start_demos_per_domain", "2",
    "--report_to", "none",
]  # fmt: skip


def cli(model_dir, out, *extra):
    command = [
        sys.executable,
        "-m",
        "tau2.scripts.train_grpo_cl",
        "--model_name_or_path",
        str(model_dir),
    ]
    return [*command, *CLI_RUN, "--output_dir", str(out), *extra]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def final_weights(out):
    """The trained weights of the latest checkpoint (the CLI trains a LoRA adapter by default)."""
    root = out / "checkpoints"
    model = root / (root / "latest").read_text() / "model"
    (weights,) = [
        model / f
        for f in ("adapter_model.safetensors", "model.safetensors")
        if (model / f).is_file()
    ]
    return load_file(str(weights))


def test_sigkill_at_a_random_moment_then_resume_equals_an_uninterrupted_run(
    tmp_path, tiny_model_dir
):
    reference = tmp_path / "reference"  # trains beside the run that is killed
    uninterrupted = subprocess.Popen(
        cli(tiny_model_dir, reference), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        cli(tiny_model_dir, killed), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not (killed / "checkpoints" / "latest").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.05)
    time.sleep(random.Random(11).uniform(0.0, 4.0))  # a moment unrelated to what the run does
    interrupted = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert interrupted, "the run finished before it could be killed"
    assert not (killed / "metrics.json").is_file() or json.loads(
        (killed / "metrics.json").read_text()
    )

    resumed = subprocess.run(
        cli(tiny_model_dir, killed, "--resume_from_checkpoint", str(killed / "checkpoints")),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _, errors = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, errors.decode()[-3000:]
    a = json.loads((reference / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert (
        b["accuracy_matrix"] == a["accuracy_matrix"] and b["global_steps"] == a["global_steps"] == 4
    )
    wa, wb = final_weights(reference), final_weights(killed)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.allclose(wa[name], wb[name], atol=1e-6), name
