"""TrajectoryBuffer: bounded per-domain storage, sampling strategies, save/load."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from tau2.continual_learning.grpo.trajectory_buffer import TrajectoryBuffer, TrajectoryRecord


@dataclass(frozen=True)
class FakeTask:
    """Stands in for a DomainTask: the buffer only reads ``key`` and ``domain``."""

    key: str
    domain: str


def fill(buffer: TrajectoryBuffer, domain: str, n: int, tasks: int = 5) -> None:
    for i in range(n):
        task = FakeTask(f"{domain}/{i % tasks}", domain)
        buffer.add(TrajectoryRecord(task=task, domain=domain, reward=float(i % 2), step=i))


def test_capacity_is_per_domain_and_bounded():
    buffer = TrajectoryBuffer(capacity=10, insertion_policy="reservoir", seed=0)
    fill(buffer, "airline", 100)
    fill(buffer, "retail", 4)
    assert buffer.sizes() == {"airline": 10, "retail": 4}
    assert len(buffer) == 14


def test_fifo_keeps_the_newest():
    buffer = TrajectoryBuffer(capacity=5, insertion_policy="fifo")
    fill(buffer, "airline", 20)
    assert sorted(r.step for r in buffer.records("airline")) == [15, 16, 17, 18, 19]


def test_records_carry_task_and_reward():
    buffer = TrajectoryBuffer(capacity=4)
    fill(buffer, "airline", 3)
    (record,) = buffer.sample("airline", 1)
    assert record.task.domain == "airline" and record.reward in (0.0, 1.0)


def mean_of(buffer, attr, strategy, trials=300, n=5, domain="airline"):
    return np.mean(
        [getattr(r, attr) for _ in range(trials) for r in buffer.sample(domain, n, strategy)]
    )


def test_high_reward_prefers_successful_records():
    buffer = TrajectoryBuffer(capacity=50, seed=1)
    fill(buffer, "airline", 50)  # half reward 1, half reward 0
    assert mean_of(buffer, "reward", "random") == pytest.approx(0.5, abs=0.05)
    assert mean_of(buffer, "reward", "high_reward") > 0.85


def test_recent_prefers_newer_records():
    buffer = TrajectoryBuffer(capacity=50, seed=2)
    fill(buffer, "airline", 50)
    assert mean_of(buffer, "step", "random") == pytest.approx(24.5, abs=1.5)
    assert mean_of(buffer, "step", "recent") > 30


def test_balanced_gives_equal_shares_across_domains():
    buffer = TrajectoryBuffer(capacity=100, seed=3)
    fill(buffer, "airline", 90)
    fill(buffer, "retail", 10)
    picks = buffer.sample(["airline", "retail"], 10, "balanced")
    assert sum(r.domain == "retail" for r in picks) == 5
    random_share = np.mean(
        [
            r.domain == "retail"
            for _ in range(200)
            for r in buffer.sample(["airline", "retail"], 10, "random")
        ]
    )
    assert random_share == pytest.approx(0.1, abs=0.03)


def test_balanced_spreads_over_tasks_within_a_domain():
    buffer = TrajectoryBuffer(capacity=100, seed=4)
    fill(buffer, "airline", 50, tasks=5)
    picks = buffer.sample("airline", 5, "balanced")
    assert len({r.task.key for r in picks}) == 5


def test_sample_never_returns_more_than_stored_and_rejects_unknown_strategy():
    buffer = TrajectoryBuffer(capacity=10)
    fill(buffer, "airline", 3)
    assert len(buffer.sample("airline", 10)) == 3
    assert buffer.sample("retail", 3) == []
    with pytest.raises(ValueError, match="high_reward"):
        buffer.sample("airline", 1, "best")


def test_save_and_load_round_trip(tmp_path):
    buffer = TrajectoryBuffer(capacity=8, insertion_policy="reservoir", seed=5)
    fill(buffer, "airline", 30)
    path = tmp_path / "buffer.pkl"
    buffer.save(path)
    loaded = TrajectoryBuffer.load(path)
    assert loaded.sizes() == buffer.sizes()
    assert [r.step for r in loaded.records("airline")] == [
        r.step for r in buffer.records("airline")
    ]
    # identical state -> identical future behaviour
    fill(buffer, "airline", 30)
    fill(loaded, "airline", 30)
    assert [r.step for r in loaded.records("airline")] == [
        r.step for r in buffer.records("airline")
    ]
    assert [r.step for r in loaded.sample("airline", 4)] == [
        r.step for r in buffer.sample("airline", 4)
    ]


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError, match="capacity"):
        TrajectoryBuffer(capacity=0)
    with pytest.raises(ValueError, match="reservoir"):
        TrajectoryBuffer(capacity=4, insertion_policy="lifo")
