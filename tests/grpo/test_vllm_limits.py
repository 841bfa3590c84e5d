"""The vLLM engine beside a training model: a model it cannot serve is refused before any work
(or, under ``auto``, sampled with the hf engine instead, with a warning), and its longest
sequence and KV cache are checked against the run's context limit before it is built."""

from __future__ import annotations

import logging

import pytest
import torch

from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.grpo.config import ConfigError
from tau2.continual_learning.grpo.vllm_budget import kv_bytes_per_token, vllm_budget
from tau2.continual_learning.rollout import HFPolicy
from tau2.continual_learning.sampling_defaults import VLLM_CPU_HEAD_SIZES, vllm_available
from tau2.continual_learning.tiny_model import build_tiny_model

pytestmark = [
    pytest.mark.skipif(not vllm_available(), reason="the vLLM engine is not installed"),
    pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU build's head sizes"),
]


@pytest.fixture
def head16_dir(tmp_path, tokenizer):
    """A tiny model of head size 16 (vLLM's CPU attention serves none below 32), saved."""
    folder = tmp_path / "head16"
    build_tiny_model(tokenizer, hidden_size=64, num_heads=4).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_the_cpu_head_sizes_are_vllms():
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    assert list(VLLM_CPU_HEAD_SIZES) == list(CPUAttentionBackend.get_supported_head_sizes())


def test_vllm_is_refused_before_any_work_for_a_head_size_it_cannot_serve(
    tmp_path, tokenizer, tiny_run, head16_dir
):
    with pytest.raises(ConfigError, match=r"sampling_backend.*head sizes.*this model's is 16"):
        GRPOConfig(
            output_dir=str(tmp_path / "a"), model_name_or_path=str(head16_dir),
            sampling_backend="vllm", **tiny_run,
        )  # fmt: skip
    # a model handed to the trainer: refused when the trainer is built, before any episode
    config = GRPOConfig(output_dir=str(tmp_path / "b"), sampling_backend="vllm", **tiny_run)
    model = build_tiny_model(tokenizer, hidden_size=64, num_heads=4)
    with pytest.raises(ConfigError, match=r"head sizes.*this model's is 16"):
        GRPOTrainer(config, model=model, tokenizer=tokenizer)
    assert not (tmp_path / "b").exists()


def test_auto_samples_with_hf_for_a_model_vllm_cannot_serve_and_says_so(
    tmp_path, tokenizer, tiny_run, head16_dir, caplog, monkeypatch
):
    from tau2.continual_learning.grpo import sampling_backend

    monkeypatch.setattr(sampling_backend, "bf16_supported", lambda: True)  # where auto picks vllm
    with caplog.at_level(logging.WARNING, "tau2.continual_learning.grpo.sampling_backend"):
        config = GRPOConfig(
            output_dir=str(tmp_path), model_name_or_path=str(head16_dir),
            sampling_backend="auto", **tiny_run,
        )  # fmt: skip
    assert config.sampling_backend == "hf"
    assert "sampling_backend='auto' samples with 'hf'" in caplog.text and "16" in caplog.text
    # the model handed to the trainer decides: the embedded model's config chose vllm
    config = GRPOConfig(output_dir=str(tmp_path), sampling_backend="auto", **tiny_run)
    assert config.sampling_backend == "vllm"
    caplog.clear()
    with caplog.at_level(logging.WARNING, "tau2.continual_learning.grpo.sampling_backend"):
        model = build_tiny_model(tokenizer, hidden_size=64, num_heads=4)
        trainer = GRPOTrainer(config, model=model, tokenizer=tokenizer)
    assert isinstance(trainer.rollouts.policy, HFPolicy) and config.sampling_backend == "hf"
    assert "samples with 'hf'" in caplog.text
    trainer.close()


def test_the_engine_serves_the_context_limit_and_its_kv_cache_must_hold_one_sequence(
    tmp_path, tokenizer, tiny_run
):
    model = build_tiny_model(tokenizer, hidden_size=64, num_heads=2)  # head size 32
    config = GRPOConfig(output_dir=str(tmp_path), sampling_backend="vllm", **tiny_run)
    budget = vllm_budget(config, model, context_limit=2048, window=8192)
    assert budget.max_model_len == 2048 and budget.gpu_memory_utilization is None
    config.vllm_max_model_len = 4096
    assert vllm_budget(config, model, 2048, 8192).max_model_len == 4096
    for too in (1024, 16384):  # below the context limit, beyond the window
        config.vllm_max_model_len = too
        with pytest.raises(ConfigError, match=r"vllm_max_model_len.*2,048.*8,192"):
            vllm_budget(config, model, 2048, 8192)
    config.vllm_max_model_len = None
    dtype_bytes = 2 if config.bf16 else 4
    per_token = kv_bytes_per_token(model.config, dtype_bytes)
    assert per_token == 2 * 2 * 2 * 32 * dtype_bytes  # keys, values x layers x heads x size
    config.vllm_kv_cache_gb = 2047 * per_token / (1 << 30)
    with pytest.raises(ConfigError, match=r"vllm_kv_cache_gb.*holds no sequence of 2,048"):
        vllm_budget(config, model, 2048, 8192)


@pytest.mark.parametrize(
    "field, value", [("vllm_gpu_memory_utilization", 0), ("vllm_gpu_memory_utilization", 1.5),
                     ("vllm_max_model_len", 32)],
)  # fmt: skip
def test_bad_limits_name_the_field(tmp_path, field, value):
    with pytest.raises(ConfigError, match=field):
        GRPOConfig(output_dir=str(tmp_path), **{field: value})


def test_on_a_gpu_the_share_is_what_the_engine_needs_and_must_fit_beside_training(
    tmp_path, tokenizer, tiny_run, monkeypatch
):
    """The arithmetic against a stated 16 GiB GPU (no GPU here): weights, KV cache and margin
    over the GPU's memory; refused when training's gradients and moments would not fit too."""
    gib = 1 << 30
    model = build_tiny_model(tokenizer, hidden_size=64, num_heads=2)
    config = GRPOConfig(output_dir=str(tmp_path), sampling_backend="vllm", **tiny_run)
    config.bf16, config.vllm_kv_cache_gb = False, 1.0
    weights = sum(p.numel() for p in model.parameters()) * 4
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (12 * gib, 16 * gib))
    share = vllm_budget(config, model, 2048, 8192).gpu_memory_utilization
    assert share == pytest.approx(-(-(weights + 3 * gib) * 100 // (16 * gib)) / 100)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (3 * gib, 16 * gib))
    with pytest.raises(ConfigError, match=r"vllm_gpu_memory_utilization.*3.0 GiB are free"):
        vllm_budget(config, model, 2048, 8192)
    config.vllm_gpu_memory_utilization = 0.5  # 8 GiB: more than is free
    with pytest.raises(ConfigError, match=r"vllm_gpu_memory_utilization.*to 0\.19"):
        vllm_budget(config, model, 2048, 8192)
