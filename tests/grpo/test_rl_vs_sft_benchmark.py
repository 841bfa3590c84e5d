"""benchmarks/rl_vs_sft.py with the tiny model: one airline warm start, then airline_v2 learned
by supervised steps and by GRPO from its weights, both scored on both domains along the way;
forgetting at matched v2 score; bad arguments refused before any run."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("rl_vs_sft")


def test_quick_learns_v2_both_ways_from_one_warm_start(
    bench, tmp_path, tiny_model_dir, capsys, tiny_benchmark_settings
):
    argv = ["--quick", "--updates", "1", "--output_dir", str(tmp_path)]
    argv += ["--set", f"model_name_or_path={tiny_model_dir}"]
    returned = bench.main([*argv, *tiny_benchmark_settings(eval_tasks=1, demos=2)])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert returned == lines
    assert [json.loads(x) for x in (tmp_path / "rl_vs_sft.jsonl").read_text().splitlines()] == lines
    warm, sft, grpo, sft_summary, grpo_summary, matched = lines
    assert warm["warm_start"] and (warm["seed"], warm["domain"]) == (0, "airline")
    for line, method in ((sft, "sft"), (grpo, "grpo")):
        assert (line["method"], line["seed"], line["new_domain"]) == (method, 0, "airline_v2")
        assert [p["updates"] for p in line["curve"]] == [0, 1]
        assert line["overrides"]["tool_arguments_in_prompt"] is False  # the interference setting
    # both start from the same warm-started weights: the same scores at update 0, airline's
    # the warm start's own
    assert sft["curve"][0] == grpo["curve"][0]
    assert sft["curve"][0]["airline_score"] == warm["warm_started"]
    assert sft["demos"] >= 1 and grpo["overrides"]["warm_start_demos_per_domain"] == 0
    assert sft_summary["summary"] and sft_summary["new_gain_mean"] == sft["new_gain"]
    assert grpo_summary["forgetting_mean"] == grpo["forgetting"]
    assert matched["matched"] and [row["seed"] for row in matched["per_seed"]] == [0]
    assert (tmp_path / "rl_vs_sft.png").stat().st_size > 0


def test_sft_first_starts_both_methods_where_shared_supervised_updates_left_off(
    bench, tmp_path, tiny_model_dir, capsys, tiny_benchmark_settings
):
    argv = ["--quick", "--updates", "1", "--sft_first", "2", "--output_dir", str(tmp_path)]
    argv += ["--set", f"model_name_or_path={tiny_model_dir}"]
    lines = bench.main([*argv, *tiny_benchmark_settings(eval_tasks=1, demos=2)])
    warm, shared, sft, grpo = lines[:4]
    assert shared["sft_first"] is True and shared["updates"] == 2
    assert [p["updates"] for p in shared["curve"]] == [0, 2]
    assert shared["curve"][0]["airline_score"] == warm["warm_started"]
    for line in (sft, grpo):  # update 0 of each is the shared start's last point
        assert line["sft_first"] == 2
        assert line["curve"][0] == {**shared["curve"][-1], "updates": 0}
        assert [p["updates"] for p in line["curve"]] == [0, 1]
    assert (tmp_path / "rl_vs_sft.png").stat().st_size > 0


def test_forgetting_is_compared_where_both_runs_first_reach_a_v2_score(bench):
    def curve(*pairs):
        return [
            {"updates": i, "new_score": v, "airline_score": a} for i, (v, a) in enumerate(pairs)
        ]

    sft = curve((0.0, 0.8), (0.4, 0.4), (0.8, 0.2))
    grpo = curve((0.0, 0.8), (0.2, 0.8), (0.1, 0.6), (0.4, 0.7))
    assert bench.airline_at(sft, 0.2) == pytest.approx(0.6)  # halfway to the second probe
    assert bench.airline_at(grpo, 0.2) == pytest.approx(0.8)  # first reached, not the later dip
    assert bench.airline_at(grpo, 0.5) is None
    row = bench.matched_forgetting(sft, grpo, seed=3)
    assert row["new_range"] == [0.0, 0.4]  # up to the lower of the two runs' best
    assert row["levels"] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert row["sft_forgetting"] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    # 0.3 is first reached between (0.1, 0.6) and (0.4, 0.7): two thirds of the way
    grpo_at_03 = 0.6 + 0.1 * 2 / 3
    assert row["grpo_forgetting"] == pytest.approx([0.0, 0.0, 0.8 - grpo_at_03, 0.1])
    assert row["difference"] == pytest.approx((0.1 + 0.2 + (0.3 - 0.8 + grpo_at_03) + 0.3) / 4)
    flat = curve((0.3, 0.8), (0.3, 0.5))
    assert bench.matched_forgetting(sft, flat, seed=3)["difference"] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--updates", "0"], "--updates must be >= 1"),
        (["--eval_every", "0"], "--eval_every must be >= 1"),
        (["--sft_first", "-1"], "--sft_first must be >= 0"),
        (["--set", "max_steps_per_domain=3"], "set by the benchmark"),
        (["--set", "warm_start_demos_per_domain=0"], "warm_start_demos_per_domain > 0"),
        (["--methods", "dpo"], "invalid choice"),
        (["--new_domain", "airline"], "invalid choice"),
    ],
)
def test_bad_arguments_are_refused_before_any_run(bench, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        bench.main([*argv, "--output_dir", str(tmp_path)])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "rl_vs_sft.jsonl").exists()
