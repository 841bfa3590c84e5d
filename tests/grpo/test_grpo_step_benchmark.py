"""benchmarks/grpo_step.py: its configurations side by side with the tiny model (each switching
what it names), the step's split and FLOPs in every line, and the FLOP estimate held to
PyTorch's own count."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tau2.continual_learning.model_loading import wrap_lora
from tau2.continual_learning.tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("grpo_step")


def test_quick_profiles_each_configuration(bench, capsys, monkeypatch):
    seen = []
    train_domain = bench.GRPOTrainer._train_domain

    def recording(trainer, domain, resume):  # what each configuration's steps run with
        config = trainer.config
        seen.append(
            (
                config.shared_prefix,
                config.per_device_train_batch_size,
                bench.scoring.environment_reward,
            )
        )
        train_domain(trainer, domain, resume)

    def alternating(prompts, completions, **kwargs):  # signal in every group: the loss runs
        return [float(i % 2) for i in range(len(completions))]

    monkeypatch.setattr(bench.GRPOTrainer, "_train_domain", recording)
    monkeypatch.setattr(bench.trainer_module, "tau2_reward", alternating)
    returned = bench.main(["--quick", "--configs", "baseline", "default", "all"])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert returned == lines
    assert [line.get("config") for line in lines] == ["baseline", "default", "all", None]
    cached = bench.scoring.environment_reward  # restored after the run
    # the untimed warm-up step, then baseline (the config's passes of 1, TRL's pass), default
    # (passes of 1 on the shared-prefix path) and all (groups of 2)
    baseline = (False, 1, bench.tau2_environment_reward)
    assert seen == [(True, 2, cached), baseline, (True, 1, cached), (True, 2, cached)]
    for line in lines[:3]:
        assert line["steps"] == 1 and line["episodes_per_step"] == 2
        assert line["episodes_per_min"] == pytest.approx(60 * 2 / line["step_s"], rel=0.01)
        assert all(line[key] >= 0 for key in bench.PHASES)
        assert line["fwd_bwd_s"] > 0 and line["logprob_s"] > 0
        assert line["fwd_bwd_gflops"] > 0 and line["matmul_peak_gflops"] > 0
        assert line["peak_rss_mb"] > 100
        assert line["rollout_s"] + line["fwd_bwd_s"] <= line["step_s"] * 1.05
    rate = {line["config"]: line["episodes_per_min"] for line in lines[:3]}
    assert lines[3]["speedup"] == pytest.approx(rate["all"] / rate["baseline"], abs=1e-3)
    assert lines[3]["default_speedup"] == pytest.approx(
        rate["default"] / rate["baseline"], abs=1e-3
    )


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_flop_estimate_matches_pytorchs_count(bench, tokenizer, lora):
    model = build_tiny_model(tokenizer, hidden_size=64)
    if lora:
        model = wrap_lora(model, 16, 32, 0.0, None)
    model.train()
    prompt, completion = 40, 24
    input_ids = torch.randint(100, 1000, (1, prompt + completion))
    with FlopCounterMode(display=False) as counter:
        logits = model(input_ids=input_ids, logits_to_keep=completion).logits
        logits.float().sum().backward()
    estimate = bench.fwd_bwd_flops(bench.ModelShape.of(model), [(prompt, completion)])
    assert estimate == pytest.approx(counter.get_total_flops(), rel=0.1)
