"""The warm-start guard: undo and retry a warm start that lowers its tasks' score, and change
nothing when every warm start passes."""

from __future__ import annotations

import csv

import pytest
import torch

from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.grpo.config import ConfigError
from tau2.continual_learning.grpo.warm_start_guard import (
    WarmStartGuard,
    restore_parameters,
    trainable_snapshot,
)
from tau2.continual_learning.model_loading import wrap_lora
from tau2.continual_learning.rollout.engines.weights import MergedModel
from tau2.continual_learning.tiny_model import build_tiny_model


def _scripted_warm_start(model: torch.nn.Module, calls: list[float]):
    """A warm start that moves every trainable weight by its learning rate (so each attempt
    is visible in the weights), recording the rates it was called with."""

    def warm_start(rate: float):
        calls.append(rate)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(rate)
        return {"steps": 1, "learning_rate": rate}, [{"warm_start_epoch": 1, "loss": rate}]

    return warm_start


def _score_by_first_weight(model: torch.nn.Module, passing: set[float]):
    """1.0 before any warm start and after one that moved the first weight by a rate in
    ``passing``; 0.0 otherwise: a score that depends on the weights alone."""
    first = next(model.parameters())
    origin = first.flatten()[0].item()

    def score() -> float:
        moved = round(first.flatten()[0].item() - origin, 6)
        return 1.0 if moved == 0.0 or moved in passing else 0.0

    return score


def test_a_failed_warm_start_is_undone_and_retried_at_half_the_rate():
    model = torch.nn.Linear(4, 2)
    frozen = torch.nn.Parameter(torch.ones(3), requires_grad=False)
    model.register_parameter("frozen", frozen)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    calls: list[float] = []
    guard = WarmStartGuard(tasks=8, retries=2)
    stats, rows = guard.run(
        model,
        _scripted_warm_start(model, calls),
        _score_by_first_weight(model, passing={0.25}),
        learning_rate=1.0,
        domain="retail",
    )
    assert calls == [1.0, 0.5, 0.25]
    assert stats["learning_rate"] == 0.25  # the kept attempt's statistics
    assert stats["guard"]["kept_attempt"] == 2
    assert stats["guard"]["score_before"] == 1.0
    assert [a["score"] for a in stats["guard"]["attempts"]] == [0.0, 0.0, 1.0]
    assert [a["learning_rate"] for a in stats["guard"]["attempts"]] == [1.0, 0.5, 0.25]
    assert [r["warm_start_attempt"] for r in rows] == [1, 2, 3]
    # the failed attempts left nothing behind: only the kept one's shift is in the weights
    for name, param in model.named_parameters():
        shift = 0.25 if param.requires_grad else 0.0
        assert torch.allclose(param, start[name] + shift), name


def test_when_every_attempt_fails_the_pre_warm_start_weights_stay():
    model = torch.nn.Linear(4, 2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    calls: list[float] = []
    stats, rows = WarmStartGuard(tasks=4, retries=1).run(
        model,
        _scripted_warm_start(model, calls),
        _score_by_first_weight(model, passing=set()),
        learning_rate=1e-3,
        domain="telecom",
    )
    assert calls == [1e-3, 5e-4]
    assert stats["guard"]["kept_attempt"] is None
    assert len(rows) == 2
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name


def test_a_passing_warm_start_is_kept_at_once():
    model = torch.nn.Linear(4, 2)
    calls: list[float] = []
    stats, _ = WarmStartGuard(tasks=4, retries=3).run(
        model,
        _scripted_warm_start(model, calls),
        _score_by_first_weight(model, passing={1e-3}),
        learning_rate=1e-3,
        domain="airline",
    )
    assert calls == [1e-3]
    assert stats["guard"]["kept_attempt"] == 0
    assert stats["guard"]["attempts"] == [{"learning_rate": 1e-3, "score": 1.0}]


def _run(tmp_path, tokenizer, tiny_run, guard_tasks: int) -> tuple[GRPOTrainer, dict]:
    settings = {
        **tiny_run,
        "cl_algorithm": "replay",
        "batch_size_per_gpu": 1,
        "max_steps_per_domain": 1,
        "eval_tasks_per_domain": 1,
        "warm_start_demos_per_domain": 2,
        "warm_start_learning_rate": 1e-3,
        "warm_start_guard_tasks": guard_tasks,
        "use_peft": True,
    }
    model = build_tiny_model(tokenizer)
    trainer = GRPOTrainer(
        GRPOConfig(output_dir=str(tmp_path), **settings), model=model, tokenizer=tokenizer
    )
    return trainer, trainer.train()


def test_a_run_whose_warm_starts_pass_equals_the_run_without_the_guard(
    tmp_path, tokenizer, tiny_run
):
    guarded, metrics = _run(tmp_path / "guarded", tokenizer, tiny_run, guard_tasks=2)
    plain, plain_metrics = _run(tmp_path / "plain", tokenizer, tiny_run, guard_tasks=0)
    for domain in ("retail", "telecom"):
        guard = metrics["warm_start"][domain]["guard"]
        assert guard["tasks"] == 2
        assert guard["kept_attempt"] == 0  # the tiny model scores 0 before and after
        assert len(guard["attempts"]) == 1 and guard["scoring_seconds"] > 0
        assert "guard" not in plain_metrics["warm_start"][domain]
    for a, b in zip(guarded.model.parameters(), plain.model.parameters(), strict=True):
        assert torch.equal(a, b)
    lora_b = [p for n, p in guarded.model.named_parameters() if "lora_B" in n]
    assert lora_b and any(
        p.abs().sum() > 0 for p in lora_b
    )  # zero at the start: training moved them
    assert metrics["accuracy_matrix"] == plain_metrics["accuracy_matrix"]
    assert metrics["step_stats"] == plain_metrics["step_stats"]
    with open(tmp_path / "guarded" / "training_log.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["phase"] == "warm_start"]
    assert [(r["domain"], r["warm_start_attempt"]) for r in rows] == [
        ("retail", "1"),
        ("telecom", "1"),
    ]


@pytest.mark.parametrize("name", ["warm_start_guard_tasks", "warm_start_guard_retries"])
def test_bad_guard_values_fail(tmp_path, name):
    with pytest.raises(ConfigError, match=f"GRPOConfig.{name}="):
        GRPOConfig(output_dir=str(tmp_path), report_to=[], **{name: -1})


def test_restored_weights_are_what_the_sampling_engine_samples_with(tokenizer):
    """An undone warm start must not live on in the engine's merged LoRA copy."""
    model = wrap_lora(build_tiny_model(tokenizer), 4, 8, 0.0, None)
    merged = MergedModel(model)
    ids = torch.tensor([[1, 2, 3, 4]])
    before = merged.current()(input_ids=ids).logits
    snapshot = trainable_snapshot(model)
    assert snapshot and all("lora" in name for name in snapshot)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in snapshot:
                param.add_(0.5)
    moved = merged.current()(input_ids=ids).logits
    assert not torch.allclose(moved, before)
    restore_parameters(model, snapshot)
    assert torch.equal(merged.current()(input_ids=ids).logits, before)
