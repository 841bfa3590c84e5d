"""The supervised warm start: gold demonstrations scored by tau2, loss on model-written tokens
only, and the trainer hook in a tiny two-domain run."""

from __future__ import annotations

import csv
import dataclasses

import pytest
import torch

from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.continual_learning import ReplayCL
from tau2.continual_learning.grpo.algorithms.sequential import SequentialCL
from tau2.continual_learning.grpo.config import ConfigError
from tau2.continual_learning.grpo.warm_start import (
    IGNORE_INDEX,
    WarmStart,
    build_batch,
    gold_demonstrations,
    masked_token_loss,
    mean_model_token_logprob,
    supervised_steps,
)
from tau2.continual_learning.rollout import CALL_PREFIX, load_tasks
from tau2.continual_learning.rollout.scoring import Scorer
from tau2.continual_learning.rollout.scripted import gold_turns
from tau2.continual_learning.tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def demos(tokenizer):
    """Gold demonstrations of a few retail and telecom skill train tasks."""
    tasks = (
        load_tasks("retail", "train", "skills")[:2] + load_tasks("telecom", "train", "skills")[:2]
    )
    return tasks, gold_demonstrations(tasks, tokenizer, max_context_tokens=4096)


def model_spans(episode) -> list[list[int]]:
    """The runs of model-written (``env_mask == 1``) completion tokens."""
    spans: list[list[int]] = []
    previous = 0
    for token, bit in zip(episode.completion_ids, episode.env_mask, strict=True):
        if bit and not previous:
            spans.append([])
        if bit:
            spans[-1].append(token)
        previous = bit
    return spans


def test_demonstrations_score_one_and_are_what_the_scripted_policy_wrote(tokenizer, demos):
    tasks, found = demos
    assert found.dropped == 0 and [e.key for e in found.episodes] == [t.key for t in tasks]
    with Scorer(0) as scorer:  # tau2's evaluators, again, on the recorded trajectories
        rescored = [
            scorer.submit(
                e.task.domain, e.task.task, e.messages, e.termination_reason, e.task.env_solo_mode
            ).result()[0]
            for e in found.episodes
        ]
    assert rescored == [1.0] * len(tasks)
    for episode, task in zip(found.episodes, tasks, strict=True):
        assert episode.reward == 1.0 and episode.termination_reason == "agent_stop"
        written = [tokenizer.decode(s) for s in model_spans(episode)]
        assert written == [turn.removeprefix(CALL_PREFIX) for turn in gold_turns(task)]


def test_over_long_demonstrations_are_dropped(tokenizer, demos):
    tasks, _ = demos
    short = gold_demonstrations(tasks[:2], tokenizer, max_context_tokens=128)
    assert short.episodes == [] and short.too_long == [t.key for t in tasks[:2]]


def test_demonstrations_are_cached_per_domain_within_a_run(tmp_path, tokenizer):
    config = GRPOConfig(
        output_dir=str(tmp_path), domains=["telecom"], warm_start_demos_per_domain=2, report_to=[]
    )
    warm = WarmStart(config, tokenizer, 2048)
    tasks = load_tasks("telecom", "train", "skills")
    first = warm.demonstrations("telecom", tasks)
    assert warm.demonstrations("telecom", tasks) is first and len(first.episodes) == 2
    again = WarmStart(config, tokenizer, 2048).demonstrations("telecom", tasks)
    assert [e.key for e in again.episodes] == [e.key for e in first.episodes]  # seeded choice


def test_labels_are_the_model_written_tokens_only(tokenizer, demos):
    _, found = demos
    episodes = found.episodes[:2]
    batch = build_batch(episodes, tokenizer.pad_token_id)
    for row, episode in enumerate(episodes):
        n, p = len(episode.prompt_ids) + len(episode.completion_ids), len(episode.prompt_ids)
        labels = batch["labels"][row]
        assert batch["input_ids"][row, :n].tolist() == episode.prompt_ids + episode.completion_ids
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (labels.numel() - n)
        assert (labels[:p] == IGNORE_INDEX).all() and (labels[n:] == IGNORE_INDEX).all()
        expected = [
            t if m else IGNORE_INDEX
            for t, m in zip(episode.completion_ids, episode.env_mask, strict=True)
        ]
        assert labels[p:n].tolist() == expected
        assert 0 < int((labels != IGNORE_INDEX).sum()) == episode.num_model_tokens < n - p


def test_a_step_trains_model_written_tokens_and_a_fully_masked_demo_gives_nothing(
    tokenizer, tiny_model, demos
):
    _, found = demos
    demo = found.episodes[0]
    masked = dataclasses.replace(demo, env_mask=[0] * len(demo.env_mask))
    pad = tokenizer.pad_token_id

    loss, count = masked_token_loss(tiny_model, build_batch([masked], pad))
    loss.backward()
    assert count == 0 and loss.item() == 0.0
    assert all(p.grad is None or not p.grad.any() for p in tiny_model.parameters())
    tiny_model.zero_grad(set_to_none=True)

    with torch.no_grad():
        before, count = masked_token_loss(tiny_model, build_batch([demo], pad))
    assert count == demo.num_model_tokens
    result = supervised_steps(
        tiny_model, [demo], pad_token_id=pad, epochs=1, learning_rate=1e-2, batch_size=1, seed=0
    )
    with torch.no_grad():
        after, _ = masked_token_loss(tiny_model, build_batch([demo], pad))
    assert result.steps == 1 and result.tokens_trained == count
    assert float(after) < float(before)


def test_a_large_learning_rate_raises_the_log_prob_of_model_written_tokens(
    tokenizer, tiny_model, demos
):
    _, found = demos
    episodes = found.episodes[3:]  # the shortest telecom demonstration
    pad = tokenizer.pad_token_id
    settings = dict(pad_token_id=pad, epochs=2, learning_rate=1e-2, batch_size=1, seed=0, bf16=True)
    before = mean_model_token_logprob(tiny_model, episodes, pad)
    result = supervised_steps(tiny_model, episodes, **settings)
    after = mean_model_token_logprob(tiny_model, episodes, pad)
    assert result.steps == 2 and len(result.epoch_losses) == 2
    assert result.epoch_losses[1] < result.epoch_losses[0]
    assert after > before + 0.5, (before, after)  # nats per token

    twin = build_tiny_model(tokenizer)  # same seed, same demonstrations: the same weights
    supervised_steps(twin, episodes, **settings)
    for a, b in zip(tiny_model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("algorithm", ["replay", "sequential"])
def test_warm_start_in_a_two_domain_run(tmp_path, tokenizer, tiny_model, tiny_run, algorithm):
    settings = {
        **tiny_run,
        "cl_algorithm": algorithm,
        "replay_ratio": 0.5,
        "batch_size_per_gpu": 1,
        "max_steps_per_domain": 1,
        "eval_tasks_per_domain": 1,
        "warm_start_demos_per_domain": 1,
        "warm_start_learning_rate": 1e-3,
    }
    trainer = GRPOTrainer(
        GRPOConfig(output_dir=str(tmp_path), **settings), model=tiny_model, tokenizer=tokenizer
    )
    assert isinstance(trainer.cl_algorithm, ReplayCL if algorithm == "replay" else SequentialCL)
    stats = trainer.train()["warm_start"]
    replayed = 1 if algorithm == "replay" else 0  # ratio 0.5: as many old demos as new
    assert set(stats) == {"retail", "telecom"}
    assert stats["retail"]["demos"] == stats["telecom"]["demos"] == 1
    assert stats["retail"]["replayed_demos"] == 0
    assert stats["telecom"]["replayed_demos"] == replayed
    assert stats["telecom"]["replayed_from"] == ["retail"] * replayed
    assert stats["telecom"]["steps"] == 1 + replayed
    for domain_stats in stats.values():
        assert domain_stats["tokens_trained"] > 0 and domain_stats["final_loss"] > 0
    with open(tmp_path / "training_log.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["phase"] == "warm_start"]
    assert [(r["domain"], r["global_step"], r["warm_start_epoch"]) for r in rows] == [
        ("retail", "0", "1"),
        ("telecom", "1", "1"),
    ]
    assert float(rows[1]["warm_start_loss"]) == pytest.approx(stats["telecom"]["final_loss"])


def test_warm_start_only_run_takes_no_grpo_step(tmp_path, tokenizer, tiny_model, tiny_run):
    """``max_steps_per_domain=0``: each domain is the supervised warm start alone."""
    settings = {**tiny_run, "max_steps_per_domain": 0, "warm_start_demos_per_domain": 1}
    before = [p.detach().clone() for p in tiny_model.parameters()]
    trainer = GRPOTrainer(
        GRPOConfig(output_dir=str(tmp_path), **settings), model=tiny_model, tokenizer=tokenizer
    )
    metrics = trainer.train()
    assert metrics["global_steps"] == 0 and metrics["step_stats"] == []
    assert len(metrics["accuracy_matrix"]) == 2
    assert all(metrics["warm_start"][d]["steps"] >= 1 for d in ("retail", "telecom"))
    assert any(not torch.equal(a, b) for a, b in zip(before, tiny_model.parameters(), strict=True))


def test_replayed_demonstrations_follow_the_ratio(tmp_path, tokenizer, tiny_model, tiny_run):
    """The trainer hook on the second domain (without the GRPO steps around it)."""
    config = GRPOConfig(
        output_dir=str(tmp_path),
        **{
            **tiny_run,
            "cl_algorithm": "replay",
            "replay_ratio": 0.25,
            "warm_start_demos_per_domain": 2,
        },
    )
    trainer = GRPOTrainer(config, model=tiny_model, tokenizer=tokenizer)
    trainer.domain_index, trainer.current_domain = 1, "telecom"
    trainer._warm_start("telecom")
    stats = trainer.metrics()["warm_start"]["telecom"]
    assert stats["demos"] == 2 and stats["replayed_demos"] == 1  # round(0.25 / 0.75 * 2)
    assert stats["steps"] == 3
    replay = trainer.warm_start.replayed(
        "telecom", 2, trainer.cl_algorithm, lambda d: trainer.tasks(d, "train")
    )
    assert [e.task.domain for e in replay] == ["retail"]


def test_the_default_job_warm_starts_a_lora_adapter(tmp_path):
    """The measured defaults (docs/results.md, "Warm start settings"): 16 demonstrations at
    1e-3, LoRA."""
    config = GRPOConfig(output_dir=str(tmp_path), report_to=[])
    assert config.warm_start_demos_per_domain == 16
    assert config.warm_start_learning_rate == 1e-3 and config.use_peft
    assert config.max_tool_response_chars == 300  # the skill source's default, resolved
    assert (
        GRPOConfig(
            output_dir=str(tmp_path), report_to=[], task_source="tau2", domains=["telecom"]
        ).max_tool_response_chars
        is None
    )
    assert (
        GRPOConfig(output_dir=str(tmp_path), max_tool_response_chars=0).max_tool_response_chars == 0
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("warm_start_demos_per_domain", -1),
        ("warm_start_epochs", 0),
        ("warm_start_learning_rate", 0.0),
        ("warm_start_learning_rate", float("nan")),
        ("warm_start_batch_size", 0),
    ],
)
def test_bad_warm_start_values_fail(tmp_path, name, value):
    with pytest.raises(ConfigError, match=f"GRPOConfig.{name}="):
        GRPOConfig(output_dir=str(tmp_path), report_to=[], **{name: value})
