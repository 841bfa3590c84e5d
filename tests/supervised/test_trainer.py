"""ContinualTrainer behaviour: hooks, ELRD, NaN handling, configs, replay vs naive."""

import math

import pytest
import torch

from tau2.continual_learning.cl_algorithm import CLAlgorithm
from tau2.continual_learning.supervised import (
    MLP,
    ContinualTrainer,
    ContinualTrainerConfig,
    LossExplosionError,
    LSTMRegressor,
    VIBNet,
    load_config,
    split_digits,
    synthetic_channel_tasks,
    tensor_tasks,
)
from tau2.continual_learning.supervised.algorithms import available_cl_algorithms

QUIET = {"progress_bar": False}


def _tiny_tasks(n_tasks=2, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for t in range(n_tasks):
        x = torch.randn(n, 4, generator=g)
        y = torch.full((n,), 2 * t) + (x[:, 0] > 0).long()
        pairs.append((x, y))
    return tensor_tasks(pairs)


def test_elrd_decays_lr_per_batch_across_tasks_and_resets_on_request():
    tasks = _tiny_tasks()
    trainer = ContinualTrainer(MLP(4, [8], 4), {"lr": 0.1, "lr_decay_gamma": 0.9, **QUIET})
    trainer.fit(tasks, num_epochs=2, batch_size=8)
    steps = trainer.global_step
    assert steps == 2 * 2 * math.ceil(32 / 8)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.9**steps)
    reset = ContinualTrainer(
        MLP(4, [8], 4), {"lr": 0.1, "lr_decay_gamma": 0.9, "reset_optimizer": True, **QUIET}
    )
    reset.fit(tasks, num_epochs=2, batch_size=8)
    assert reset.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.9 ** (steps // 2))


def test_hooks_run_in_order_with_supervised_batches():
    calls = []

    class Recorder(CLAlgorithm):
        def pre_task_hook(self, trainer, domain):
            calls.append(("pre", domain))

        def augment_batch(self, new_tasks, current_domain):
            calls.append(("augment", len(new_tasks[0])))
            return new_tasks

        def extra_loss(self, model, batch, current_domain):
            assert batch[0].outputs is not None and batch[0].outputs.requires_grad
            return torch.zeros(())

        def post_step_hook(self, trainer, domain):
            assert trainer.last_step.batches[0].losses.shape == (8,)
            calls.append(("step", domain))

        def post_task_hook(self, trainer, domain):
            calls.append(("post", domain, len(trainer.score_matrices["class_il"])))

    tasks = _tiny_tasks(n=10)
    trainer = ContinualTrainer(MLP(4, [8], 4), QUIET, cl_algorithm=Recorder())
    trainer.fit(tasks, num_epochs=1, batch_size=8)
    assert calls == [
        ("pre", "task_0"), ("augment", 8), ("step", "task_0"), ("post", "task_0", 1),
        ("pre", "task_1"), ("augment", 8), ("step", "task_1"), ("post", "task_1", 2),
    ]  # fmt: skip
    assert trainer.cl_algorithm._trainer is trainer
    assert not trainer.use_amp  # autocast only on CUDA


def test_nan_loss_skips_the_update_and_k_in_a_row_stop_the_run():
    tasks = _tiny_tasks(n_tasks=1, n=40)
    tasks[0].x_train[:8] = float("nan")  # exactly the first batch when not shuffled
    trainer = ContinualTrainer(MLP(4, [8], 4), {"max_consecutive_nan": 3, **QUIET})
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(tasks[0].x_train, tasks[0].y_train), batch_size=8
    )
    trainer.train_task(loader, loader, 0, "t", num_epochs=1)
    assert trainer.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    tasks[0].x_train[:] = float("nan")
    with pytest.raises(LossExplosionError, match="3 non-finite losses in a row"):
        ContinualTrainer(MLP(4, [8], 4), {"max_consecutive_nan": 3, **QUIET}).train_task(
            loader, loader, 0, "t", 1
        )


def test_replay_lowers_forgetting_against_naive_on_split_digits():
    results = {}
    for algorithm in ("naive", "er"):
        torch.manual_seed(0)
        trainer = ContinualTrainer(
            MLP(64, [256, 256], 10),
            {
                "lr": 0.05,
                "momentum": 0.8,
                "cl_algorithm": algorithm,
                "eval_scenarios": ["class_il", "task_il"],
                **QUIET,
            },
        )
        results[algorithm] = trainer.fit(split_digits(seed=0), num_epochs=5, batch_size=32)
    naive, er = results["naive"]["class_il"], results["er"]["class_il"]
    assert naive["forgetting"] > 0.9 and er["forgetting"] < 0.25
    assert er["ACC"] > naive["ACC"] + 0.5
    assert results["er"]["task_il"]["ACC"] >= er["ACC"]  # masking to the task's classes only helps
    assert results["er"]["class_il"]["FWT"] is not None  # fit() declared tasks and a baseline


def test_per_epoch_monitoring_and_regression_scores():
    named = synthetic_channel_tasks(num_sequences=60, seq_len=6)
    tasks = tensor_tasks([(x, y) for _, x, y in named], names=[n for n, _, _ in named])
    trainer = ContinualTrainer(
        LSTMRegressor(2, 8, 2),
        {
            "task_type": "regression",
            "regression_score": "nmse",
            "optimizer": "adam",
            "lr": 0.01,
            "cl_algorithm": "er_lars",
            **QUIET,
        },
    )
    metrics = trainer.fit(tasks, num_epochs=2, batch_size=16)["regression"]
    assert len(trainer.epoch_history) == 3 * 2
    assert [len(e["scores"]["regression"]) for e in trainer.epoch_history] == [3] * 6
    assert metrics["higher_is_better"] is False and metrics["num_tasks"] == 3
    assert all(0 < s < 2 for s in metrics["final_scores"])
    stats = trainer.get_statistics()["cl_algorithm"]
    counts = stats["buckets"]  # simple-ER memory balanced by task
    assert set(counts) == {"0", "1", "2"} and sum(counts.values()) == 144
    assert max(counts.values()) - min(counts.values()) <= 1


METHODS = [
    "naive", "er", "er_reservoir", "er_lars", "brs", "brs_lars", "iba", "soft_replay", "mir",
    "vib_replay", "distill", "kmeans_memory", "generative_replay",
]  # fmt: skip


def test_methods_are_registered_without_clashing_with_grpo_names():
    import tau2.continual_learning.supervised.algorithms  # noqa: F401

    assert set(METHODS) <= set(available_cl_algorithms())
    assert not {"sequential", "replay", "adaptive_replay", "clear"} & set(METHODS)


@pytest.mark.parametrize("name", METHODS)
def test_every_method_trains_two_tasks(name):
    torch.manual_seed(0)
    model = VIBNet(64, 10, (64,), 16) if name == "vib_replay" else MLP(64, [64], 10)
    params = {"generative_replay": {"generator_final_steps": 20}, "naive": {}}.get(
        name, {"memory_size": 40}
    )
    trainer = ContinualTrainer(
        model, {"lr": 0.05, "cl_algorithm": name, "cl_params": params, **QUIET}
    )
    metrics = trainer.fit(split_digits(n_tasks=5, seed=0)[:2], num_epochs=2, batch_size=32)[
        "class_il"
    ]
    assert metrics["num_tasks"] == 2 and metrics["ACC"] > 0.45
    assert trainer.get_statistics()["cl_algorithm"]["algorithm"] == name


def test_config_from_dict_nested_yaml_and_clear_errors(tmp_path):
    nested = {
        "optimizer": {"type": "adam", "lr": 0.001},
        "continual_strategy": {
            "generative_replay": {"enabled": True, "memory_size": 500, "replay_weight": 1.0}
        },
        "generator": {"type": "vae", "hidden_dims": [256, 128], "latent_dim": 32},
    }
    cfg = load_config(nested)
    assert (cfg.optimizer, cfg.lr, cfg.cl_algorithm) == ("adam", 0.001, "generative_replay")
    assert cfg.cl_params == {
        "memory_size": 500,
        "replay_weight": 1.0,
        "generator": nested["generator"],
    }
    path = tmp_path / "cfg.yaml"
    path.write_text("optimizer: sgd\nlr: 0.02\ncl_algorithm: er\ncl_params: {memory_size: 50}\n")
    assert load_config(path) == ContinualTrainerConfig(
        lr=0.02, cl_algorithm="er", cl_params={"memory_size": 50}
    )
    with pytest.raises(ValueError, match="optimizer='rmsprop' is invalid; allowed"):
        load_config({"optimizer": "rmsprop"})
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['lrr'\]"):
        load_config({"lrr": 0.1})
    with pytest.raises(ValueError, match=r"lr_decay_gamma=1\.5 is invalid"):
        ContinualTrainerConfig(lr_decay_gamma=1.5)
    with pytest.raises(ValueError, match="exactly one algorithm"):
        load_config({"continual_strategy": {"er": {"enabled": False}}})
    with pytest.raises(
        ValueError,
        match=r"cl_params \['memory_sz'\] invalid for 'distill'.*'distill_weight'.*'memory_size'",
    ):
        ContinualTrainer(MLP(4, [4], 2), {"cl_algorithm": "distill", "cl_params": {"memory_sz": 3}})
    with pytest.raises(ValueError, match="insertion='lifo' is invalid"):
        ContinualTrainer(MLP(4, [4], 2), {"cl_algorithm": "er", "cl_params": {"insertion": "lifo"}})
    with pytest.raises(ValueError, match="task_id=1 is invalid; allowed: 0"):
        loader = _tiny_tasks(1)[0].loaders()[0]
        ContinualTrainer(MLP(4, [4], 4), QUIET).train_task(loader, loader, 1, "x", 1)
