"""CLEAR for GRPO: behaviour cloning on stored trajectories pulls the policy back."""

from __future__ import annotations

import pytest
import torch

from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.continual_learning import CLEARCL
from tau2.continual_learning.rollout import EpisodeRunner, HFPolicy, load_tasks
from tau2.continual_learning.tiny_model import build_tiny_model


@pytest.fixture
def trainer_with_stored_telecom(tmp_path, tokenizer):
    behaviour = build_tiny_model(tokenizer, seed=11)
    tasks = load_tasks("telecom", "train", "skills")[:2]
    with EpisodeRunner(
        HFPolicy(behaviour, tokenizer),
        max_turns=1,
        max_new_tokens_per_turn=12,
        scoring_workers=0,
        seed=5,
    ) as runner:
        episodes = runner.run(tasks, num_generations=2)
    config = GRPOConfig(
        output_dir=str(tmp_path),
        domains=["telecom", "retail"],
        cl_algorithm="clear",
        bc_batch_size=4,
        report_to=[],
    )
    trainer = GRPOTrainer(config, model=build_tiny_model(tokenizer, seed=12), tokenizer=tokenizer)
    for episode in episodes:
        trainer.trajectory_buffer.add_episode(episode)
    return trainer, behaviour, episodes


def test_config_selects_clear_with_its_parameters(trainer_with_stored_telecom):
    trainer, _, _ = trainer_with_stored_telecom
    assert isinstance(trainer.cl_algorithm, CLEARCL)
    assert trainer.cl_algorithm.bc_batch_size == 4 and trainer.cl_algorithm.bc_weight == 0.1


def test_no_cloning_on_the_first_domain(trainer_with_stored_telecom):
    trainer, _, _ = trainer_with_stored_telecom
    assert trainer.cl_algorithm.extra_loss(trainer.model, None, "telecom") is None


def test_behaviour_kl_is_zero_for_the_behaviour_policy_and_shrinks_under_training(
    trainer_with_stored_telecom,
):
    trainer, behaviour, episodes = trainer_with_stored_telecom
    algo = trainer.cl_algorithm
    assert any(sum(e.env_mask) for e in episodes)
    # the behaviour policy itself has (numerically) zero KL to its own samples
    assert algo.extra_loss(behaviour, None, "retail").item() == pytest.approx(0.0, abs=1e-4)
    model = trainer.model
    with torch.no_grad():  # a sharply peaked policy, far from the near-uniform behaviour one
        model.get_output_embeddings().weight.mul_(30.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = algo.extra_loss(model, None, "retail")
        assert loss.requires_grad and torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 0.01
    assert losses[-1] < 0.5 * losses[0]
    assert algo.get_statistics()["bc_steps"] == 16
