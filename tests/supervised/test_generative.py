"""Generative replay: generated samples look like the task they were trained on."""

import torch

from tau2.continual_learning.supervised import MLP, ContinualTrainer, split_digits
from tau2.continual_learning.supervised.algorithms import GenerativeReplay, build_generator

QUIET = {"progress_bar": False}


def test_vae_trained_on_one_task_generates_that_tasks_classes(tmp_path):
    torch.manual_seed(0)
    tasks = split_digits(seed=0)
    algo = GenerativeReplay(
        generator={"type": "vae", "hidden_dims": [128, 64], "latent_dim": 16},
        generator_final_steps=300,
        sample_grid_dir=str(tmp_path),
        image_shape=(8, 8),
    )
    trainer = ContinualTrainer(MLP(64, [128], 10), {"lr": 0.05, **QUIET}, cl_algorithm=algo)
    train, test = tasks[0].loaders(32, 0)
    trainer.train_task(train, test, 0, tasks[0].name, num_epochs=3, classes=tasks[0].classes)
    samples = algo.generate(200)
    assert samples.shape == (200, 64) and samples.min() >= 0 and samples.max() <= 1
    with torch.no_grad():
        predicted = trainer.model(samples).argmax(1)
    share = torch.isin(predicted, torch.tensor(tasks[0].classes)).float().mean().item()
    assert share > 0.9, share
    grid = tmp_path / f"generated_after_0_{tasks[0].name}.png"
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert algo.get_statistics()["grids"] == [str(grid)]
    # on the next task, every step gets generated samples labelled by the previous model
    train1, test1 = tasks[1].loaders(32, 1)
    trainer.train_task(train1, test1, 1, tasks[1].name, num_epochs=1, classes=tasks[1].classes)
    generated = [b for b in trainer.last_step.batches if b.kind == "generated"]
    assert len(generated) == 1 and generated[0].soft_targets.shape == (32, 10)
    assert len(algo.generators) == 2


def test_single_conv_vae_mode_and_generator_shapes():
    conv = build_generator(
        {"type": "conv_vae", "image_shape": (1, 8, 8), "channels": (8, 16), "latent_dim": 4}, (64,)
    )
    assert conv.generate(5).shape == (5, 64)
    assert conv.loss(torch.rand(3, 64)).shape == (3,)
    torch.manual_seed(0)
    algo = GenerativeReplay(
        generator={
            "type": "conv_vae",
            "image_shape": (1, 8, 8),
            "channels": (8, 16),
            "latent_dim": 8,
        },
        per_task_generators=False,
        generator_final_steps=10,
    )
    trainer = ContinualTrainer(MLP(64, [32], 10), {"lr": 0.05, **QUIET}, cl_algorithm=algo)
    trainer.fit(split_digits(seed=0)[:3], num_epochs=1)
    assert len(algo.generators) == 1  # one generator, refreshed after every task
    assert algo.generate(7).shape == (7, 64)
