"""Shared settings for seconds-long continual GRPO runs with the tiny model."""

from __future__ import annotations

import pytest

TINY_RUN = dict(
    domains=["retail", "telecom"],
    batch_size_per_gpu=2,
    num_samples_per_prompt=2,
    eval_tasks_per_domain=2,
    max_turns=1,
    max_new_tokens_per_turn=8,
    min_buffer_size=1,
    replay_ratio=0.5,
    warm_start_demos_per_domain=0,
    use_peft=False,
    learning_rate=1e-5,
    report_to=[],
)


@pytest.fixture
def tiny_run() -> dict:
    """GRPOConfig keyword arguments for a small two-domain run (a fresh copy per test)."""
    return dict(TINY_RUN)


@pytest.fixture
def tiny_model_dir(tmp_path, tokenizer, tiny_model):
    """The tiny model saved as a model folder, for ``--model_name_or_path``."""
    folder = tmp_path / "tiny"
    tiny_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
