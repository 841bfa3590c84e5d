"""The run report: report.md with the figures, CL metrics with bootstrap intervals, step signal."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.grpo.evaluation import pass_at_one
from tau2.continual_learning.grpo.learning_signal import groups_of
from tau2.continual_learning.grpo.step import step_statistics
from tau2.continual_learning.metrics import bootstrap_cl_intervals, compute_cl_metrics


def test_a_run_writes_its_report_with_figures_and_intervals(
    tmp_path, tokenizer, tiny_model, tiny_run
):
    config = GRPOConfig(  # guided groups: each group gets a success, so rewards differ
        output_dir=str(tmp_path),
        **{**tiny_run, "max_steps_per_domain": 1, "batch_size_per_gpu": 1, "guided_groups": True},
    )
    trainer = GRPOTrainer(config, model=tiny_model, tokenizer=tokenizer)
    metrics = trainer.train()
    report = (tmp_path / "report.md").read_text()
    for figure in ("accuracy_matrix.png", "scores_over_training.png", "training_signal.png"):
        assert (tmp_path / figure).stat().st_size > 1000
        assert f"]({figure})" in report
    assert "| ACC |" in report and "| forgetting |" in report and "peak RSS" in report
    low, high = metrics["intervals"]["ACC"]
    assert low <= metrics["ACC"] <= high
    assert [s["domain"] for s in metrics["step_stats"]] == ["retail", "telecom"]
    trl_rows = [r for r in trainer.log_rows if "frac_reward_zero_std" in r]
    for stats, row in zip(metrics["step_stats"], trl_rows, strict=True):  # TRL saw the same
        assert stats["groups"] == 1 and stats["reward_mean"] == row["reward"] == 0.5
        assert stats["informative_share"] == 1 - row["frac_reward_zero_std"] == 1.0
    assert metrics["peak_rss_mb"] > 100
    assert json.loads((tmp_path / "metrics.json").read_text())["intervals"]["ACC"] == [low, high]


def test_informative_groups_are_those_with_unequal_rewards():
    episodes = [SimpleNamespace(reward=r) for r in (0, 0, 1, 0, 1, 1)]
    stats = step_statistics(groups_of(episodes, 2), "airline", 4)
    assert stats["groups"] == 3 and stats["informative_groups"] == 1
    assert abs(stats["informative_share"] - 1 / 3) < 1e-12 and stats["reward_mean"] == 0.5


def test_wilson_interval_is_informative_at_zero_and_one():
    zero = pass_at_one([SimpleNamespace(reward=0.0)] * 32)
    one = pass_at_one([SimpleNamespace(reward=1.0)] * 32)
    assert zero.mean == 0.0 and zero.low == 0.0 and 0.05 < zero.high < 0.15
    assert one.mean == 1.0 and one.high == 1.0 and 0.85 < one.low < 0.95


def test_bootstrap_intervals_contain_the_estimates_and_collapse_without_noise():
    rewards = [[[1, 1, 0, 1], [0, 0, 1, 0]], [[1, 0, 0, 0], [1, 1, 1, 0]]]
    baseline = [[0, 0, 0, 1], [0, 1, 0, 0]]
    intervals = bootstrap_cl_intervals(rewards, baseline, num_resamples=300, seed=1)
    matrix = [[sum(c) / len(c) for c in row] for row in rewards]
    point = compute_cl_metrics(matrix, [sum(b) / len(b) for b in baseline])
    for name in ("ACC", "BWT", "FWT", "forgetting"):
        low, high = intervals[name]
        assert low <= point[name] <= high and high > low, name
    constant = bootstrap_cl_intervals([[[1, 1]], [[1, 1]]][:1], None, num_resamples=50)
    assert constant["ACC"] == (1.0, 1.0) and constant["BWT"] is None and constant["FWT"] is None


def test_forgetting_benchmark_figure_needs_runs_and_draws_every_sequence(tmp_path):
    from tau2.continual_learning.report import plot_forgetting_benchmark

    def run(sequence, algorithm, seed, forgetting):
        return {
            "sequence": sequence,
            "algorithm": algorithm,
            "seed": seed,
            "ACC": 0.5,
            "forgetting": forgetting,
            "domains": ["airline", "airline_v2"],
            "baseline": [0.1, 0.0],
            "accuracy_matrix": [[0.6 + seed / 10, 0.0], [0.6 - forgetting, 0.5]]
            if forgetting is not None
            else None,
        }

    runs = [
        run("interference", a, s, f)
        for a, f in (("sequential", 0.2), ("replay", 0.0))
        for s in (0, 1)
    ]
    runs += [run("plain", "sequential", 0, None)]  # undefined values are left out, not fatal
    path = tmp_path / "forgetting.png"
    plot_forgetting_benchmark(runs, path)
    assert path.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="no run lines"):
        plot_forgetting_benchmark([], tmp_path / "empty.png")


def test_mean_scores_over_training_follow_each_domain_per_algorithm():
    from tau2.continual_learning.report import mean_scores_over_training

    def run(algorithm, matrix):
        return {
            "algorithm": algorithm,
            "domains": ["a", "b"],
            "baseline": [0.1, 0.0],
            "accuracy_matrix": matrix,
        }

    curves = mean_scores_over_training(
        [
            run("sequential", [[0.6, 0.0], [0.2, 0.5]]),
            run("sequential", [[0.8, 0.2], [0.4, 0.7]]),
            run("replay", [[0.7, 0.1], [0.7, 0.6]]),
            run("replay", None),  # an undefined run is left out
        ]
    )
    expected = {
        "sequential": {"a": [0.1, 0.7, 0.3], "b": [0.0, 0.1, 0.6]},
        "replay": {"a": [0.1, 0.7, 0.7], "b": [0.0, 0.1, 0.6]},
    }
    assert list(curves) == list(expected)
    for algorithm, domains in expected.items():
        assert list(curves[algorithm]) == ["a", "b"]
        for domain, values in domains.items():
            assert curves[algorithm][domain] == pytest.approx(values)
    assert mean_scores_over_training([run("sequential", None)]) == {}
