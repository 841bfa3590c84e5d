"""GRPOConfig: defaults, derived TRL fields, and errors that name field, value and allowed."""

from __future__ import annotations

import pytest

from tau2.continual_learning import GRPOConfig
from tau2.continual_learning.config import ConfigError


def test_defaults_describe_the_default_cpu_job(tmp_path):
    config = GRPOConfig(output_dir=str(tmp_path))
    assert config.domains == ["airline", "retail", "telecom"]
    assert config.task_source == "skills" and config.cl_algorithm == "replay"
    assert config.model_name_or_path == "SmolLM2-135M-Instruct"
    assert config.num_generations == config.num_samples_per_prompt
    assert (
        config.per_device_train_batch_size
        == config.batch_size_per_gpu * config.num_samples_per_prompt
    )
    assert config.max_steps == config.max_steps_per_domain


def test_seed_example_configs_construct():
    GRPOConfig(cl_algorithm="replay", replay_ratio=0.3, replay_buffer_size=1000)
    GRPOConfig(cl_algorithm="adaptive_replay", replay_ratio=0.2)
    GRPOConfig(replay_buffer_size=500)


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
        ({"buffer_insertion_policy": "lifo"}, "buffer_insertion_policy", "reservoir"),
        ({"max_steps_per_domain": 0}, "max_steps_per_domain", ">= 1"),
    ],
)
def test_invalid_values_fail_with_field_value_and_allowed(kwargs, field, fragment):
    with pytest.raises(ConfigError) as info:
        GRPOConfig(**kwargs)
    message = str(info.value)
    assert f"GRPOConfig.{field}=" in message and fragment in message
