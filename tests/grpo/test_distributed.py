"""torchrun with two CPU processes (gloo): the ranks sample different episodes and train on
their averaged gradients, so they end with the same weights, the weights of one process trained
on both ranks' episodes; with the transformers engine and with one vLLM engine per rank.

Guided groups give the tiny model a learning signal (a gold success in each all-fail group), so
the weights move."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from peft import get_peft_model_state_dict
from safetensors.torch import load_file

from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.tiny_model import build_tiny_model

RECORDER = Path(__file__).with_name("record_rollouts.py")

RUN = dict(
    domains="telecom",
    max_steps_per_domain=2,
    batch_size_per_gpu=1,
    num_samples_per_prompt=2,
    eval_tasks_per_domain=2,
    max_turns=1,
    max_new_tokens_per_turn=8,
    warm_start_demos_per_domain=0,
    guided_groups=True,
    report_to="none",
)
LINEAR = dict(  # an update linear in the gradient: a sum of the ranks' gradients would show
    optim="sgd", learning_rate=0.5, max_grad_norm=0.0, lora_dropout=0.0, bf16=False
)


def torchrun(folder: Path, port: int, entry: list[str], settings: dict) -> Path:
    """Two CPU ranks run ``entry`` (a module's or script's command line) with ``settings`` as
    flags; returns the output folder."""
    out = folder / "run"
    flags = [a for k, v in {**settings, "output_dir": out}.items() for a in (f"--{k}", str(v))]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={port}", *entry, *flags,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def check_ranks_agree(out: Path, backend: str) -> dict[str, torch.Tensor]:
    """Both ranks' summaries agree, each rank kept its own buffer; returns the trained adapter."""
    summaries = [
        json.loads((out / "rank_summaries" / f"rank-{r}.json").read_text()) for r in (0, 1)
    ]
    assert [s["rank"] for s in summaries] == [0, 1]
    assert summaries[0]["global_step"] == summaries[1]["global_step"] == 2
    assert summaries[0]["accuracy_matrix"] == summaries[1]["accuracy_matrix"]
    assert summaries[0]["weights_checksum"] == summaries[1]["weights_checksum"]
    end = out / "checkpoints" / (out / "checkpoints" / "latest").read_text()
    assert sorted(p.name for p in end.glob("buffer-rank-*.pkl")) == [
        "buffer-rank-0.pkl",
        "buffer-rank-1.pkl",
    ]  # each rank restores its own buffer on resume
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy_matrix"] == summaries[0]["accuracy_matrix"]
    assert metrics["sampling_backend"] == backend
    adapter = load_file(end / "model" / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and any(v.abs().max() > 0 for v in lora_b)  # trained: LoRA's B starts at 0
    return adapter


def replayed_run(
    folder: Path, model_dir: Path, steps: list[dict], batch_size_per_gpu: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One process trains like a rank of the torchrun job, on the given episodes per step
    (``GRPOTrainer.rollout`` replays them); returns its adapter weights before and after."""
    settings = {**RUN, **LINEAR, "domains": [RUN["domains"]], "report_to": []}
    config = GRPOConfig(
        output_dir=str(folder),
        model_name_or_path=str(model_dir),
        **{**settings, "batch_size_per_gpu": batch_size_per_gpu, "eval_tasks_per_domain": 1},
    )
    trainer = GRPOTrainer(config)
    before = {k: v.clone() for k, v in get_peft_model_state_dict(trainer.model).items()}
    replay = iter(steps)
    trainer.rollout = lambda prompts, trl_trainer=None: next(replay)
    trainer.train()
    assert next(replay, None) is None  # every recorded step was trained on
    return before, get_peft_model_state_dict(trainer.model)


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys(), sorted(a.keys() ^ b.keys())
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_two_ranks_average_their_gradients(tmp_path, tiny_model_dir):
    """The torchrun job's weights equal a single process trained on both ranks' episodes of
    every step (DDP's gradient all-reduce averages), and differ from either rank's alone."""
    settings = {**RUN, **LINEAR, "model_name_or_path": tiny_model_dir}
    out = torchrun(tmp_path, 29531, [str(RECORDER)], settings)
    trained = check_ranks_agree(out, "hf")
    ranks = [json.loads((out / "rollouts" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2
    for first, second in zip(*ranks, strict=True):  # different episodes, each with a signal
        assert first["prompt_ids"] != second["prompt_ids"]
        assert sorted(first["tau2_reward"]) == sorted(second["tau2_reward"]) == [0.0, 1.0]

    union = [{k: a[k] + b[k] for k in a} for a, b in zip(*ranks, strict=True)]
    initial, both = replayed_run(tmp_path / "both", tiny_model_dir, union, batch_size_per_gpu=2)
    tolerance = 1e-5 * largest_difference(both, initial)  # float error of the summation order
    assert tolerance > 0  # training moved the weights
    assert largest_difference(trained, both) <= tolerance
    # the comparison tells: one rank's episodes alone give other weights (the ranks agree, so
    # neither rank trained alone)
    _, alone = replayed_run(tmp_path / "r0", tiny_model_dir, ranks[0], batch_size_per_gpu=1)
    assert largest_difference(trained, alone) > 1000 * tolerance


def test_vllm_ranks_agree(tmp_path, tokenizer):
    """One vLLM engine per rank: training moves the weights and the ranks agree."""
    model_dir = tmp_path / "tiny-vllm"  # head size 32: what vLLM's CPU attention supports
    build_tiny_model(tokenizer, hidden_size=64, num_heads=2).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    settings = {
        **RUN,
        "model_name_or_path": model_dir,
        "learning_rate": 1e-3,
        "sampling_backend": "vllm",
        "vllm_kv_cache_gb": 0.125,
    }
    out = torchrun(tmp_path, 29533, ["-m", "tau2.scripts.train_grpo_cl"], settings)
    check_ranks_agree(out, "vllm")
