"""The episode context limit follows the model's window, and a run whose prompts cannot fit is
refused when the trainer is built, before any work."""

from __future__ import annotations

import pytest
from transformers import AutoConfig

from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.grpo.config import ConfigError
from tau2.continual_learning.grpo.rollouts import Rollouts
from tau2.continual_learning.grpo.warm_start import WarmStart, gold_demonstrations
from tau2.continual_learning.model_loading import resolve_model_path
from tau2.continual_learning.tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def embedded_window():
    """The embedded model's window, read from its config (its weights are not needed)."""
    return AutoConfig.from_pretrained(resolve_model_path(None)).max_position_embeddings


def _config(tmp_path, **kwargs):
    return GRPOConfig(output_dir=str(tmp_path / "run"), report_to=[], **kwargs)


def test_the_limit_is_the_model_window_unless_set(tmp_path, tokenizer):
    for window in (4096, 8192):
        model = build_tiny_model(tokenizer, max_position_embeddings=window)
        assert Rollouts(_config(tmp_path), model, tokenizer).max_context_tokens == window
    config = _config(tmp_path, max_context_tokens=2048)
    assert Rollouts(config, model, tokenizer).max_context_tokens == 2048
    with pytest.raises(ConfigError, match=r"max_context_tokens=9000 .*window of 8,192 tokens"):
        Rollouts(_config(tmp_path, max_context_tokens=9000), model, tokenizer)


def test_official_telecom_with_the_embedded_model_is_refused_before_any_work(
    tmp_path, tokenizer, embedded_window
):
    model = build_tiny_model(tokenizer, max_position_embeddings=embedded_window)
    config = _config(tmp_path, task_source="tau2", domains=["airline", "telecom"])
    with pytest.raises(ConfigError) as refused:
        GRPOTrainer(config, model=model, tokenizer=tokenizer)
    message = str(refused.value)
    assert "GRPOConfig.domains" in message and "domain 'telecom'" in message
    prompt = int(
        message.split("system prompt of tau2 domain 'telecom' is ")[1].split()[0].replace(",", "")
    )
    assert prompt > embedded_window
    assert f"window of {embedded_window:,} tokens" in message and "--domains" in message
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_a_limit_below_the_official_prompt_names_the_flag_to_raise(tmp_path, tokenizer):
    model = build_tiny_model(tokenizer)
    config = _config(tmp_path, task_source="tau2", domains=["retail"], max_context_tokens=2048)
    with pytest.raises(ConfigError) as refused:
        Rollouts(config, model, tokenizer)
    message = str(refused.value)
    assert "max_context_tokens=2048" in message and "domain 'retail'" in message
    assert "raise --max_context_tokens (the model's window is 8,192 tokens)" in message


def test_official_gold_demonstrations_fit_the_default_limit(tmp_path, tokenizer):
    config = _config(
        tmp_path, task_source="tau2", domains=["airline"], warm_start_demos_per_domain=2
    )
    rollouts = Rollouts(config, build_tiny_model(tokenizer), tokenizer)
    tasks = rollouts.tasks("airline", "train")
    demos = WarmStart(config, tokenizer, rollouts.max_context_tokens).demonstrations(
        "airline", tasks
    )
    assert len(demos.episodes) == 2 and not demos.too_long
    for episode in demos.episodes:
        assert 2048 < len(episode.prompt_ids) + len(episode.completion_ids) <= 8192
    keys = [e.key for e in demos.episodes]
    chosen = [t for t in tasks if t.key in keys]
    assert gold_demonstrations(chosen, tokenizer, max_context_tokens=2048).too_long == keys


def test_the_command_line_refuses_official_telecom_with_the_message(tiny_model_dir, capsys):
    from tau2.scripts.train_grpo_cl import main

    argv = ["--task_source", "tau2", "--domains", "telecom", "--report_to", "none"]
    assert main([*argv, "--model_name_or_path", str(tiny_model_dir)]) == 2
    error = capsys.readouterr().err
    assert "domain 'telecom'" in error and "window of 8,192 tokens" in error
