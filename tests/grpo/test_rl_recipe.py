"""Issue 28's learning pieces wired into the trainer: per-domain warm starts, the partial-credit
training reward, the pass-rate curriculum, TRL's per-step metrics in the step statistics, and
adaptive replay probing validation tasks."""

from __future__ import annotations

import csv
import itertools
import json

import pytest

from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.continual_learning import SequentialCL
from tau2.continual_learning.grpo.evaluation import Score
from tau2.continual_learning.grpo.record import RunRecord
from tau2.continual_learning.grpo.seeds import Seeds
from tau2.continual_learning.rollout import CALL_PREFIX, load_tasks
from tau2.continual_learning.rollout.partial_credit import partial_credit
from tau2.continual_learning.rollout.scripted import ScriptedPolicy, gold_script, gold_turns
from tau2.continual_learning.tiny_model import build_tiny_model


def make_trainer(tmp_path, tokenizer, tiny_model, settings):
    config = GRPOConfig(output_dir=str(tmp_path), **settings)
    return GRPOTrainer(config, model=tiny_model, tokenizer=tokenizer)


# -- 1. per-domain warm start --------------------------------------------------------------------
def test_only_the_chosen_domains_are_warm_started(tmp_path, tokenizer, tiny_model, tiny_run):
    settings = {**tiny_run, "max_steps_per_domain": 0, "warm_start_demos_per_domain": 1}
    settings.update(warm_start_domains=["retail"], warm_start_guard_tasks=0)
    trainer = make_trainer(tmp_path, tokenizer, tiny_model, settings)
    scored = []
    evaluate = trainer.evaluator.domain

    def recorded(domain, limit=None):
        scored.append(domain)
        return evaluate(domain, limit)

    trainer.evaluator.domain = recorded
    metrics = trainer.train()
    every = ["retail", "telecom"]  # the baseline, and each accuracy-matrix row
    assert scored == [*every, "retail", *every, *every]  # no scoring after a telecom warm start
    assert metrics["warm_start"]["retail"]["steps"] >= 1
    assert metrics["warm_start"]["telecom"] == {"skipped": "not in warm_start_domains"}
    matrix, phases = metrics["accuracy_matrix"], metrics["phase_scores"]
    assert phases["retail"]["before"] == metrics["baseline"][0]
    assert phases["telecom"]["before"] == matrix[0][1]
    # warm start only: the same weights scored twice, greedily
    assert phases["retail"]["after_warm_start"] == phases["retail"]["after_grpo"] == matrix[0][0]
    assert set(phases["telecom"]) == {"before", "after_grpo"}
    assert json.loads((tmp_path / "metrics.json").read_text())["phase_scores"] == phases
    assert [r["domain"] for r in trainer.log_rows if r.get("phase") == "warm_start"] == ["retail"]
    report = (tmp_path / "report.md").read_text()
    assert "**telecom**" in report and "no warm start; GRPO alone added" in report


class ReplayRetailDemos(SequentialCL):
    """One retail demonstration in every later warm start."""

    def warm_start_replay(self, domain, num_demos, rng):
        return {"retail": 1} if domain != "retail" else {}


def test_a_domain_learned_from_reward_alone_has_no_demonstrations_to_replay(
    tmp_path, tokenizer, tiny_model, tiny_run
):
    settings = {**tiny_run, "warm_start_demos_per_domain": 2}
    train = lambda trainer: lambda d: trainer.tasks(d, "train")  # noqa: E731
    for chosen, replayed in ((None, ["retail"]), (["telecom"], [])):
        trainer = make_trainer(
            tmp_path, tokenizer, tiny_model, {**settings, "warm_start_domains": chosen}
        )
        episodes = trainer.warm_start.replayed("telecom", 2, ReplayRetailDemos(), train(trainer))
        assert [e.task.domain for e in episodes] == replayed


# -- 2. partial-credit training reward and 4. TRL's per-step metrics ---------------------------
def partly_right_policy(tokenizer, tasks):
    """The scripted gold policy (a real policy of the episode runner, scored by tau2) that
    makes each task's first gold call and then, on every other later turn, finishes early
    (``done``): consecutive episodes of a group get different shares of the gold actions, so
    some fail with partial credit and groups differ."""
    full = gold_script(tasks)
    toggle = itertools.count()

    def script(context: str) -> str:
        chosen = full(context)
        task = max((t for t in tasks if t.task.ticket in context), key=lambda t: len(t.task.ticket))
        turns = gold_turns(task)  # skill tasks are solo: the last turn is done
        if chosen in (turns[0], turns[-1]):
            return chosen
        return chosen if next(toggle) % 2 else turns[-1]

    return ScriptedPolicy(tokenizer, script, prefix=CALL_PREFIX)


def test_trl_trains_on_the_shaped_reward_while_everything_else_keeps_tau2s(
    tmp_path, tokenizer, tiny_model, tiny_run
):
    """The step trains on tasks with two gold calls (a failure that made one has partial
    credit): the curriculum, told they are informative, picks them."""
    weight = 0.5
    settings = {**tiny_run, "domains": ["telecom"], "max_steps_per_domain": 1}
    settings.update(max_turns=5, max_new_tokens_per_turn=160, eval_tasks_per_domain=4)
    settings.update(partial_credit_weight=weight, curriculum="pass_rate")
    trainer = make_trainer(tmp_path, tokenizer, tiny_model, settings)
    tasks = trainer.tasks("telecom", "train") + trainer.tasks("telecom", "test")
    for task in trainer.tasks("telecom", "train"):
        if len(task.task.evaluation_criteria.actions) == 2:
            trainer.step.curriculum.record(task.key, 0.0)
            trainer.step.curriculum.record(task.key, 1.0)
    trainer.rollouts.policy = partly_right_policy(tokenizer, tasks)
    run = trainer.rollouts.run
    trained, evaluations = [], []

    def recorded(tasks, num_generations, temperature, seed):
        episodes = run(tasks, num_generations, temperature, seed)
        if num_generations > 1:  # a GRPO step's groups
            trained.extend(episodes)
        else:  # evaluation: one episode per task (the baseline, then the row after telecom)
            evaluations.append(episodes)
        return episodes

    trainer.rollouts.run = recorded
    metrics = trainer.train()

    credits = [partial_credit(e) for e in trained]
    assert {len(e.task.task.evaluation_criteria.actions) for e in trained} == {2}
    assert any(e.reward == 0.0 and 0.0 < c < 1.0 for e, c in zip(trained, credits, strict=True))
    binary = sum(e.reward for e in trained) / len(trained)
    shaped = sum(e.reward + weight * c for e, c in zip(trained, credits, strict=True)) / len(
        trained
    )
    (stats,) = metrics["step_stats"]
    (logged,) = [r for r in trainer.log_rows if "reward" in r]  # TRL's own step log
    assert logged["reward"] == pytest.approx(shaped) and shaped > binary
    assert stats["training_reward_mean"] == pytest.approx(shaped)
    assert stats["reward_mean"] == pytest.approx(binary)  # statistics: tau2's reward
    stored = trainer.trajectory_buffer.records("telecom")
    assert sorted(r.reward for r in stored) == sorted(e.reward for e in trained)  # buffer too

    baseline, after = evaluations  # evaluation: tau2's binary reward
    assert any(0.0 < partial_credit(e) < 1.0 for e in baseline + after)
    assert {e.reward for e in baseline + after} <= {0.0, 1.0}
    assert metrics["baseline"][0] == sum(e.reward for e in baseline) / len(baseline)
    assert metrics["accuracy_matrix"][0][0] == sum(e.reward for e in after) / len(after)

    # TRL's policy entropy and clip fractions, taken from its log, join the step's statistics
    # and, with them, training_log.csv
    assert stats["entropy"] == logged["entropy"] > 0.0
    clip = [k for k in stats if k.startswith("clip_ratio/")]
    assert "clip_ratio/region_mean" in clip and all(stats[k] == logged[k] for k in clip)
    with open(tmp_path / "training_log.csv") as fh:
        (row,) = [r for r in csv.DictReader(fh) if r["reward"]]
    for key in ("entropy", "clip_ratio/region_mean", "reward_mean", "informative_share"):
        assert float(row[key]) == pytest.approx(stats[key])
    assert json.loads((tmp_path / "metrics.json").read_text())["step_stats"][0] == stats


# -- 3. the pass-rate curriculum -----------------------------------------------------------------
def test_the_curriculum_chooses_the_steps_tasks_and_is_kept_in_checkpoints(
    tmp_path, tokenizer, tiny_model, tiny_run
):
    settings = {**tiny_run, "domains": ["telecom"], "max_steps_per_domain": 1}
    settings.update(curriculum="pass_rate", seed=4)
    trainer = make_trainer(tmp_path, tokenizer, tiny_model, settings)
    curriculum = trainer.step.curriculum
    assert curriculum.seed == Seeds(4).curriculum()
    train = trainer.tasks("telecom", "train")
    mixed, settled = train[-2:], train[:10]  # a seeded history: two informative tasks
    for task in mixed:
        curriculum.record(task.key, 1.0)
        curriculum.record(task.key, 0.0)
    for task in settled:
        curriculum.record(task.key, 1.0)

    metrics = trainer.train()
    rolled_out = {r.task.key for r in trainer.trajectory_buffer.records("telecom")}
    assert rolled_out == {t.key for t in mixed}  # not TRL's dataset order: informative first
    (stats,) = metrics["step_stats"]
    tiers = [stats[f"curriculum_{tier}"] for tier in ("informative", "unseen", "rest")]
    assert tiers == [2, len(train) - 12, 10]  # at the step's choice
    # a task's rate is its latest group's: the step's group replaced the older rewards, so a
    # task the policy now always solves (or fails) leaves the informative tier
    size = trainer.config.num_samples_per_prompt
    assert curriculum.window == size
    assert all(len(curriculum.rewards[t.key]) == size for t in mixed)

    restored = make_trainer(tmp_path, tokenizer, build_tiny_model(tokenizer), settings)
    restored.load_checkpoint(tmp_path / "checkpoints")
    assert restored.step.curriculum.state_dict() == curriculum.state_dict()


# -- 6. adaptive replay probes validation tasks --------------------------------------------------
def test_adaptive_replay_probes_validation_tasks_never_test_tasks(
    tmp_path, tokenizer, tiny_model, tiny_run
):
    """The default probe interval: the ratio moves within the second domain, on probes of
    train tasks only."""
    settings = {**tiny_run, "cl_algorithm": "adaptive_replay", "max_steps_per_domain": 2}
    trainer = make_trainer(
        tmp_path, tokenizer, tiny_model, {**settings, "probe_tasks_per_domain": 2}
    )
    config = trainer.config
    assert config.probe_interval == 1  # the default
    probed = []
    score = trainer.evaluator.tasks

    def recorded(tasks):
        probed.extend(t.key for t in tasks)
        return score(tasks)

    trainer.evaluator.tasks = recorded
    trainer.train()

    domains = config.domains
    test = {t.key for d in domains for t in load_tasks(d, "test", config.task_source)}
    validation = {
        t.key
        for d in domains
        for t in trainer.tasks(d, "validation")[: config.probe_tasks_per_domain]
    }
    assert probed and set(probed) == validation and not set(probed) & test
    assert validation <= {t.key for d in domains for t in trainer.tasks(d, "train")}
    history = trainer.cl_algorithm.get_statistics()["ratio_history"]
    assert history and history[0]["step"] < trainer.global_step  # acted before the run ended
    assert trainer.cl_algorithm.replay_ratio != tiny_run["replay_ratio"]


# -- 5. phase attribution in the report ----------------------------------------------------------
def test_the_report_draws_and_says_what_each_phase_added(tmp_path):
    record = RunRecord(domains=["airline", "retail", "telecom"])
    record.set_baseline([Score(m, 0.0, 1.0, 4, (m,)) for m in (0.0, 0.25, 0.0)])
    record.begin_domain("airline")
    record.phase_scores["airline"]["after_warm_start"] = 0.5
    record.warm_start["airline"] = {"steps": 16}
    record.add_row("airline", [Score(m, 0.0, 1.0, 4, (m,)) for m in (0.75, 0.25, 0.0)])
    record.begin_domain("retail")  # learned from reward alone
    record.warm_start["retail"] = {"skipped": "not in warm_start_domains"}
    record.add_row("retail", [Score(m, 0.0, 1.0, 4, (m,)) for m in (0.5, 0.5, 0.0)])
    record.begin_domain("telecom")  # warm start not scored on its own
    record.warm_start["telecom"] = {"steps": 16}
    record.add_row("telecom", [Score(m, 0.0, 1.0, 4, (m,)) for m in (0.5, 0.5, 1.0)])
    record.write(tmp_path, record.metrics(seed=0, about={}))

    assert (tmp_path / "phase_scores.png").stat().st_size > 1000
    report = (tmp_path / "report.md").read_text()
    assert "](phase_scores.png)" in report
    assert (
        "**airline**: 0.000 before its training; the warm start added +0.500 (to 0.500), "
        "GRPO +0.250 (to 0.750)." in report
    )
    assert "**retail**: 0.250 before its training; no warm start; GRPO alone added +0.250" in report
    assert "**telecom**: 0.000 before its training; warm start and GRPO together added +1.000" in (
        report
    )
