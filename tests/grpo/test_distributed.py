"""torchrun with two CPU processes (gloo): training runs and both ranks agree, with the
transformers engine and with one vLLM engine per rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tau2.continual_learning.tiny_model import build_tiny_model


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_two_process_torchrun_ranks_agree(tmp_path, tiny_model_dir, tokenizer, backend):
    model_dir = tiny_model_dir
    extra = []
    if backend == "vllm":
        model_dir = tmp_path / "tiny-vllm"  # head size 32: what vLLM's CPU attention supports
        build_tiny_model(tokenizer, hidden_size=64, num_heads=2).save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        extra = ["--rollout_backend", "vllm", "--vllm_kv_cache_gb", "0.125"]
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={29531 if backend == 'hf' else 29533}",
        "-m", "tau2.scripts.train_grpo_cl",
        "--model_name_or_path", str(model_dir),
        "--domains", "telecom",
        "--max_steps_per_domain", "2",
        "--batch_size_per_gpu", "1",
        "--num_samples_per_prompt", "2",
        "--eval_tasks_per_domain", "2",
        "--max_turns", "1",
        "--max_new_tokens_per_turn", "8",
        "--learning_rate", "1e-3",
        "--warm_start_demos_per_domain", "0",
        "--output_dir", str(out),
        "--report_to", "none",
        *extra,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
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
    assert metrics["rollout_backend"] == backend
