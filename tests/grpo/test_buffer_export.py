"""TrajectoryBuffer.to_dataset: real episodes of the tiny model as a ``datasets.Dataset`` that
saves to disk and loads back with every field intact."""

from __future__ import annotations

from datasets import load_from_disk

from tau2.continual_learning.grpo.trajectory_buffer import TrajectoryBuffer
from tau2.continual_learning.rollout import EpisodeRunner, HFPolicy, load_tasks

FIELDS = ("prompt_ids", "completion_ids", "env_mask", "logprobs")


def test_the_buffer_exports_its_episodes_and_they_round_trip(tmp_path, tokenizer, tiny_model):
    tasks = [load_tasks(d, "train", "skills")[0] for d in ("telecom", "airline")]
    runner = EpisodeRunner(
        HFPolicy(tiny_model, tokenizer), max_turns=1, max_new_tokens_per_turn=8, seed=0
    )
    with runner:
        episodes = runner.run(tasks, num_generations=2)
    buffer = TrajectoryBuffer(capacity=8)
    for step, episode in enumerate(episodes):
        buffer.add_episode(episode, step=step)

    dataset = buffer.to_dataset()
    dataset.save_to_disk(tmp_path / "buffer")
    loaded = load_from_disk(str(tmp_path / "buffer"))

    assert loaded.features == dataset.features
    assert len(loaded) == len(episodes) == 4
    stored = [r for d in buffer.domains for r in buffer.records(d)]
    for row, record in zip(loaded, stored, strict=True):
        assert row["task_key"] == record.task.key and row["domain"] == record.domain
        assert (row["reward"], row["step"], row["order"]) == (
            record.reward,
            record.step,
            record.order,
        )
        for name in FIELDS:
            assert row[name] == getattr(record, name), name
    assert loaded[0]["completion_ids"] and 1 in loaded[0]["env_mask"]  # the model's turn
    assert [row["domain"] for row in loaded] == ["telecom", "telecom", "airline", "airline"]


def test_an_empty_buffer_exports_an_empty_dataset_with_the_columns():
    dataset = TrajectoryBuffer().to_dataset()
    assert len(dataset) == 0 and "completion_ids" in dataset.column_names
