"""ReplayCL batch composition and AdaptiveReplayCL's ratio control, through the trainer API."""

from __future__ import annotations

import math
import random

import pytest

from tau2.continual_learning import GRPOConfig
from tau2.continual_learning.continual_learning import AdaptiveReplayCL, ReplayCL
from tau2.continual_learning.grpo.trainer import GRPOTrainer
from tau2.continual_learning.grpo.trajectory_buffer import TrajectoryBuffer, TrajectoryRecord
from tau2.continual_learning.rollout import load_tasks


@pytest.fixture
def trainer(tmp_path, tokenizer, tiny_model):
    config = GRPOConfig(
        output_dir=str(tmp_path),
        domains=["airline", "retail"],
        batch_size_per_gpu=8,
        num_samples_per_prompt=2,
        min_buffer_size=4,
        report_to=[],
    )
    return GRPOTrainer(config, model=tiny_model, tokenizer=tokenizer)


def store(trainer: GRPOTrainer, domain: str, n: int) -> None:
    for task in load_tasks(domain, "train", "skills")[:n]:
        trainer.trajectory_buffer.add(TrajectoryRecord(task=task, domain=domain, reward=1.0))


@pytest.mark.parametrize("ratio,expected", [(0.25, 2), (0.5, 4), (0.0, 0)])
def test_replay_mixes_the_configured_share_of_old_task_groups(trainer, ratio, expected):
    trainer.cl_algorithm = ReplayCL(replay_ratio=ratio, min_buffer_size=4)
    store(trainer, "airline", 10)
    trainer.current_domain = "retail"
    new = load_tasks("retail", "train", "skills")[:8]
    batch = trainer.compose_batch(new)
    assert len(batch) == 8
    assert sum(t.domain == "airline" for t in batch) == expected
    assert trainer.cl_algorithm.get_statistics()["total_replay_samples"] == expected


def test_no_replay_below_min_buffer_size_and_batch_is_topped_up(trainer):
    trainer.cl_algorithm = ReplayCL(replay_ratio=0.5, min_buffer_size=20)
    store(trainer, "airline", 10)
    trainer.current_domain = "retail"
    new = load_tasks("retail", "train", "skills")[:8]
    batch = trainer.compose_batch(new)
    assert [t.key for t in batch] == [t.key for t in new]


def test_first_domain_never_replays(trainer):
    trainer.cl_algorithm = ReplayCL(replay_ratio=0.5, min_buffer_size=0)
    store(trainer, "airline", 10)
    trainer.current_domain = "airline"
    new = load_tasks("airline", "train", "skills")[20:28]
    assert all(t in new for t in trainer.compose_batch(new))


def test_replay_latest_domain_only(tmp_path, tokenizer, tiny_model):
    config = GRPOConfig(
        output_dir=str(tmp_path),
        domains=["airline", "retail", "telecom"],
        batch_size_per_gpu=8,
        num_samples_per_prompt=2,
        report_to=[],
    )
    trainer = GRPOTrainer(config, model=tiny_model, tokenizer=tokenizer)
    trainer.cl_algorithm = ReplayCL(replay_ratio=0.5, min_buffer_size=1, replay_all_domains=False)
    store(trainer, "airline", 10)
    store(trainer, "retail", 10)
    trainer.current_domain = "telecom"
    batch = trainer.compose_batch(load_tasks("telecom", "train", "skills")[:8])
    assert {t.domain for t in batch} == {"telecom", "retail"}


class _ProbeTrainer:
    """Minimal trainer surface for driving AdaptiveReplayCL's hooks."""

    def __init__(self, scores):
        self.config = type("C", (), {"domains": ["airline", "retail"]})()
        self.scores = scores
        self.trajectory_buffer = TrajectoryBuffer(10)
        self.global_step = 0

    def probe(self, domains, n):
        return {d: self.scores[d] for d in domains}

    def latest_scores(self):
        return {"airline": 0.8}


def test_adaptive_ratio_rises_on_forgetting_and_falls_on_recovery_within_bounds():
    algo = AdaptiveReplayCL(
        initial_replay_ratio=0.2,
        max_replay_ratio=0.4,
        min_replay_ratio=0.1,
        adaptation_rate=0.1,
        forgetting_threshold=0.1,
        probe_interval=1,
    )
    fake = _ProbeTrainer({"airline": 0.8})
    algo.attach(fake)
    algo.post_task_hook(fake, "airline")  # reference 0.8
    fake.scores["airline"] = 0.5  # dropped by 0.3 > 0.1
    algo.pre_task_hook(fake, "retail")
    algo.post_step_hook(fake, "retail")
    assert algo.replay_ratio == pytest.approx(0.3)
    algo.post_step_hook(fake, "retail")
    algo.post_step_hook(fake, "retail")
    assert algo.replay_ratio == pytest.approx(0.4)  # capped at max
    fake.scores["airline"] = 0.8  # recovered
    for _ in range(5):
        algo.post_step_hook(fake, "retail")
    assert algo.replay_ratio == pytest.approx(0.1)  # floored at min
    history = algo.get_statistics()["ratio_history"]
    assert history[0]["reason"].startswith("forgetting on airline")
    assert any(h["reason"].startswith("recovered") for h in history)
    assert all(0.1 <= h["new"] <= 0.4 for h in history)


def test_adaptive_ratio_holds_inside_the_dead_band():
    algo = AdaptiveReplayCL(initial_replay_ratio=0.2, forgetting_threshold=0.2)
    algo.reference_scores["airline"] = 0.8
    assert algo.observe_probe_scores({"airline": 0.65}) == pytest.approx(
        0.2
    )  # drop 0.15 in [0.1, 0.2]
    assert algo.ratio_history == []


def test_adaptive_rejects_ratio_outside_bounds():
    with pytest.raises(ValueError, match="initial_replay_ratio"):
        AdaptiveReplayCL(initial_replay_ratio=0.8, max_replay_ratio=0.5)


@pytest.mark.parametrize("ratio,size", [(0.25, 2), (0.3, 2), (0.2, 4), (0.5, 3), (0.1, 1)])
def test_replay_slots_round_stochastically_to_the_ratio(ratio, size):
    algorithm, rng = ReplayCL(replay_ratio=ratio), random.Random(0)
    slots = [algorithm.num_replay_slots(size, rng) for _ in range(4000)]
    assert set(slots) <= {math.floor(ratio * size), math.ceil(ratio * size)}
    assert sum(slots) / (4000 * size) == pytest.approx(ratio, abs=0.02)


def test_the_default_jobs_long_run_replay_share_is_its_ratio(tmp_path, tokenizer, tiny_model):
    """0.25 of 2 groups: a replayed group every other step on average (not every step), drawn
    from the run's seed and the step, so a run replays the same steps every time."""
    config = GRPOConfig(output_dir=str(tmp_path), domains=["airline", "retail"], report_to=[])
    trainer = GRPOTrainer(config, model=tiny_model, tokenizer=tokenizer)
    assert trainer.cl_algorithm.replay_ratio == 0.25 and config.batch_size_per_gpu == 2
    store(trainer, "airline", 10)
    trainer.current_domain = "retail"
    new = load_tasks("retail", "train", "skills")[:2]

    def replayed_per_step(steps):
        counts = []
        for step in steps:
            trainer.record.global_step = step
            counts.append(sum(t.domain == "airline" for t in trainer.compose_batch(new)))
        return counts

    counts = replayed_per_step(range(800))
    assert set(counts) == {0, 1}
    assert sum(counts) / (2 * len(counts)) == pytest.approx(0.25, abs=0.03)
    assert replayed_per_step(range(50)) == counts[:50]
