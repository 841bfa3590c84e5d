"""benchmarks/learning_signal.py with the tiny model: one shared warm start, paired variants,
their lines and summaries, and bad arguments refused before any run."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def tiny(tiny_benchmark_settings):
    """--set arguments for seconds-long runs with the tiny model."""
    return tiny_benchmark_settings(eval_tasks=2, demos=2)


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("learning_signal")


def test_variants_start_from_one_warm_start(
    bench, tmp_path, tiny_model_dir, capsys, monkeypatch, tiny
):
    starts = []

    class Recording(bench.GRPOTrainer):
        def train(self):
            starts.append(
                (self.config.warm_start_demos_per_domain, self.config.max_steps_per_domain,
                 bench.adapter_state(self.model), list(self.baseline))
            )  # fmt: skip
            return super().train()

    monkeypatch.setattr(bench, "GRPOTrainer", Recording)
    argv = ["--variants", "default", "guided_groups", "--steps", "1", "--domain", "airline"]
    argv += ["--output_dir", str(tmp_path), "--set", f"model_name_or_path={tiny_model_dir}"]
    returned = bench.main([*argv, *tiny])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert returned == lines
    warm, default, guided, *summaries = lines
    assert warm["warm_start"] and warm["domain"] == "airline" and warm["seed"] == 0
    assert [s["variant"] for s in summaries] == ["default", "guided_groups"]
    for line in (default, guided):
        assert line["warm_started"] == warm["warm_started"]
        assert line["gain"] == pytest.approx(line["score"] - warm["warm_started"])
        assert line["steps"] == 1
    # the warm-started tiny model failed its sampled group: only the guided variant trains on
    # an informative one (a gold success put in)
    assert default["informative_share"] == default["informative_share_sampled"] == 0.0
    assert guided["informative_share_sampled"] == 0.0 and guided["informative_share"] == 1.0
    assert (
        guided["overrides"]["guided_groups"] is True and "guided_groups" not in default["overrides"]
    )
    assert summaries[0]["gain_mean"] == default["gain"] and summaries[0]["gain_std"] == 0.0
    # the warm start ran once; each variant started from its weights, without a warm start of
    # its own and without re-scoring the untrained model
    (demos, steps, untrained_state, _), *variants = starts
    assert (demos, steps) == (2, 0)
    for demos, steps, state, baseline in variants:
        assert (demos, steps) == (0, 1) and baseline == [warm["untrained"]]
        assert any(not v.equal(untrained_state[k]) for k, v in state.items())
    first, second = (v[2] for v in variants)
    assert all(v.equal(second[k]) for k, v in first.items())
    recorded = (tmp_path / "learning_signal.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in recorded] == lines


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--variants", "nope"], "invalid choice: 'nope'"),
        (["--set", "seed=3"], "set by the benchmark"),
        (["--set", "not_a_field=1"], "not a GRPOConfig field"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--set", "warm_start_demos_per_domain=0"], "warm_start_demos_per_domain"),
    ],
)
def test_bad_arguments_are_rejected_before_any_run(bench, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        bench.main([*argv, "--output_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
