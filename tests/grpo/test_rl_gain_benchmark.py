"""benchmarks/rl_gain.py with the tiny model: one airline warm start per seed, GRPO-only runs
from its weights with a learning curve, their lines and summaries; bad arguments refused
before any run."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("rl_gain")


def test_quick_runs_grpo_alone_from_the_airline_warm_start(
    bench, tmp_path, tiny_model_dir, capsys, monkeypatch, tiny_benchmark_settings
):
    starts = []

    class Recording(bench.GRPOTrainer):
        def train(self):
            starts.append(
                (self.config.domains, self.config.warm_start_demos_per_domain,
                 bench.adapter_state(self.model))
            )  # fmt: skip
            return super().train()

    monkeypatch.setattr(bench, "GRPOTrainer", Recording)
    argv = [
        "--quick",
        "--output_dir",
        str(tmp_path),
        "--set",
        f"model_name_or_path={tiny_model_dir}",
    ]
    returned = bench.main([*argv, *tiny_benchmark_settings(eval_tasks=2, demos=2)])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert returned == lines
    assert [json.loads(x) for x in (tmp_path / "rl_gain.jsonl").read_text().splitlines()] == lines
    warm, run, total = lines
    assert warm["warm_start"] and (warm["seed"], warm["domain"]) == (0, "airline")
    assert (run["domain"], run["seed"], run["variant"], run["steps"]) == ("retail", 0, "grpo", 2)
    assert run["gain"] == pytest.approx(run["end_score"] - run["start_score"])
    curve = run["curve"]
    assert [p["step"] for p in curve] == [0, 1, 2]
    assert curve[0]["score"] == run["start_score"] and curve[-1]["score"] == run["end_score"]
    assert [p["episodes"] for p in curve] == [0, 2, 4] and run["episodes"] == 4  # 1 group of 2
    assert 0.0 <= curve[1]["score"] <= 1.0 and 0.0 <= run["informative_share"] <= 1.0
    assert total == {
        "summary": True,
        "domain": "retail",
        "variant": "grpo",
        "seeds": [0],
        **{f"{n}_mean": run[n] for n in ("gain", "start_score", "end_score")},
        **{f"{n}_std": 0.0 for n in ("gain", "start_score", "end_score")},
        **{f"{n}_ci95": None for n in ("gain", "start_score", "end_score")},
    }
    # the warm start trained airline on demonstrations; the run started from its weights and
    # had none of its own
    (warm_domains, warm_demos, untrained), (run_domains, run_demos, started) = starts
    assert (warm_domains, warm_demos, run_domains, run_demos) == (["airline"], 2, ["retail"], 0)
    assert any(not v.equal(untrained[k]) for k, v in started.items())


def test_the_summary_interval_is_a_t_interval_over_seeds(bench):
    mean, std, (low, high) = bench.seed_interval([0.1, 0.3, 0.5])
    assert mean == pytest.approx(0.3) and std == pytest.approx(0.2)
    assert high - mean == pytest.approx(4.302653 * 0.2 / 3**0.5, rel=1e-5)
    assert mean - low == pytest.approx(high - mean)
    assert bench.seed_interval([0.4]) == (0.4, 0.0, None)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "--steps must be >= 1"),
        (["--eval_every", "0"], "--eval_every must be >= 1"),
        (["--set", "max_steps_per_domain=3"], "set by the benchmark"),
        (["--set", "warm_start_demos_per_domain=0"], "warm_start_demos_per_domain > 0"),
        (["--domains", "mock"], "invalid choice"),
    ],
)
def test_bad_arguments_are_refused_before_any_run(bench, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        bench.main([*argv, "--output_dir", str(tmp_path)])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "rl_gain.jsonl").exists()
