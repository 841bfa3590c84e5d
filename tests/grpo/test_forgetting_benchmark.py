"""benchmarks/forgetting.py: quick mode with the tiny model, its output lines, --resume, and
the rejection of bad names before anything runs."""

from __future__ import annotations

import json
import weakref

import pytest

RUN_KEYS = {
    "sequence",
    "algorithm",
    "seed",
    "domains",
    "ACC",
    "BWT",
    "FWT",
    "forgetting",
    "accuracy_matrix",
    "baseline",
    "baseline_rewards",
    "branched_from",
    "wall_s",
    "peak_rss_mb",
    "overrides",
}
METRICS = ("ACC", "BWT", "FWT", "forgetting", "wall_s")


@pytest.fixture(scope="module")
def tiny(tiny_benchmark_settings):
    """--set arguments for seconds-long runs with the tiny model."""
    return tiny_benchmark_settings(eval_tasks=1, demos=1)


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("forgetting")


def printed_lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_quick_run_lines_summaries_and_resume(
    bench, tmp_path, tiny_model_dir, capsys, monkeypatch, tiny
):
    models, alive = [], []

    class Recording(bench.GRPOTrainer):
        def __init__(self, config):
            alive.append([ref for ref in models if ref() is not None])
            super().__init__(config)
            models.append(weakref.ref(self.model))

    monkeypatch.setattr(bench, "GRPOTrainer", Recording)
    argv = ["--quick", "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path)]
    argv += tiny
    returned = bench.main(argv)
    lines = printed_lines(capsys)
    assert returned == lines
    runs = [line for line in lines if not line.get("summary")]
    summaries = [line for line in lines if line.get("summary")]
    assert lines == runs + summaries
    assert [(r["sequence"], r["algorithm"], r["seed"], r["branched_from"]) for r in runs] == [
        ("interference", "sequential", 0, None),
        ("interference", "replay", 0, "sequential"),  # continues sequential's first domain
    ]
    metrics_files = []
    for run in runs:
        assert set(run) == RUN_KEYS
        assert run["domains"] == ["airline", "airline_v2"]
        assert len(run["accuracy_matrix"]) == 2 and all(len(r) == 2 for r in run["accuracy_matrix"])
        assert len(run["baseline"]) == 2
        assert run["overrides"]["max_steps_per_domain"] == 1  # --quick
        assert run["overrides"]["eval_tasks_per_domain"] == 1  # --set wins over --quick
        folder = tmp_path / "interference" / run["algorithm"] / "seed-0"
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics_files.append(metrics)
        assert metrics["accuracy_matrix"] == run["accuracy_matrix"]
        assert metrics["cl_algorithm"] == run["algorithm"]
        assert not (folder / "checkpoints").exists()  # the trunk's too, once replay ran
    first_domain = [  # the same until replay has an earlier domain: a fresh model per run
        (m["warm_start"]["airline"]["epoch_losses"], m["step_stats"][0]) for m in metrics_files
    ]
    assert first_domain[0] == first_domain[1]
    for run, row in zip(runs, summaries, strict=True):
        assert (row["sequence"], row["algorithm"], row["runs"], row["seeds"]) == (
            run["sequence"],
            run["algorithm"],
            1,
            [0],
        )
        for name in METRICS:
            assert row[f"{name}_mean"] == run[name] and row[f"{name}_std"] == 0.0
    assert len(models) == 2 and alive == [[], []]  # each run's model freed before the next
    recorded = (tmp_path / "forgetting.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in recorded] == lines

    monkeypatch.setattr(bench, "GRPOTrainer", None)  # a run would fail now
    figure = tmp_path / "figures" / "forgetting.png"
    assert bench.main([*argv, "--resume", "--plot", str(figure)]) == summaries
    assert printed_lines(capsys) == summaries
    assert figure.read_bytes().startswith(b"\x89PNG")  # drawn from the recorded runs alone
    recorded = (tmp_path / "forgetting.jsonl").read_text().splitlines()
    assert len(recorded) == len(lines)  # nothing new, nothing appended


def test_a_resumed_benchmark_reuses_the_recorded_untrained_scores(
    bench, tmp_path, tiny_model_dir, capsys, monkeypatch, tiny
):
    argv = ["--quick", "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(tmp_path)]
    argv += tiny
    bench.main([*argv, "--algorithms", "sequential"])
    (first,) = [line for line in printed_lines(capsys) if not line.get("summary")]
    assert len(first["baseline_rewards"]) == 2 and len(first["baseline_rewards"][0]) == 1
    evaluated = []

    class Recording(bench.GRPOTrainer):
        def evaluate_all(self, desc):
            evaluated.append(desc)
            return super().evaluate_all(desc)

    monkeypatch.setattr(bench, "GRPOTrainer", Recording)
    bench.main([*argv, "--algorithms", "sequential", "replay", "--resume"])
    lines = printed_lines(capsys)
    (second,) = [line for line in lines if not line.get("summary")]
    assert second["algorithm"] == "replay"
    assert "baseline" not in evaluated and len(evaluated) == 2  # one evaluation per domain
    assert (second["baseline"], second["baseline_rewards"]) == (
        first["baseline"],
        first["baseline_rewards"],
    )
    recorded = (tmp_path / "forgetting.jsonl").read_text().splitlines()
    assert len(recorded) == 1 + 1 + 1 + 2  # first run, its summary, the new run, two summaries


def test_branched_runs_equal_runs_trained_whole(
    bench, tmp_path, tiny_model_dir, capsys, monkeypatch, tiny
):
    evaluated = []

    class Recording(bench.GRPOTrainer):
        def evaluate_all(self, desc):
            evaluated.append((self.config.cl_algorithm, desc))
            return super().evaluate_all(desc)

    monkeypatch.setattr(bench, "GRPOTrainer", Recording)
    argv = ["--quick", "--model_name_or_path", str(tiny_model_dir), *tiny]
    argv += ["--algorithms", "sequential", "replay"]  # adaptive replay's branch: test_resume
    argv += ["--set", "warm_start_demos_per_domain=4"]  # replay then mixes in an airline demo

    def runs(*extra):
        evaluated.clear()
        bench.main([*argv, *extra])
        lines = [line for line in printed_lines(capsys) if not line.get("summary")]
        return lines, list(evaluated)

    whole, whole_evaluations = runs("--output_dir", str(tmp_path / "whole"), "--no_branch")
    branched, branched_evaluations = runs("--output_dir", str(tmp_path / "branched"))
    assert [r["branched_from"] for r in whole] == [None, None]
    assert [r["branched_from"] for r in branched] == [None, "sequential"]
    assert [a for a, _ in whole_evaluations] == ["sequential"] * 3 + ["replay", "replay"]
    # the branch evaluates only after the second domain; its first comes from the trunk
    assert [a for a, _ in branched_evaluations] == ["sequential"] * 3 + ["replay"]
    timing = ("branched_from", "wall_s", "peak_rss_mb")
    for a, b in zip(whole, branched, strict=True):
        assert {k: v for k, v in a.items() if k not in timing} == {
            k: v for k, v in b.items() if k not in timing
        }

    # the tiny model scores 0 everywhere: its second warm start's losses tell the weights apart
    def training(folder, algorithm):
        metrics = json.loads(
            (tmp_path / folder / "interference" / algorithm / "seed-0" / "metrics.json").read_text()
        )
        return metrics["warm_start"]["airline_v2"]["epoch_losses"], metrics["step_stats"]

    for algorithm in ("sequential", "replay"):
        assert training("whole", algorithm) == training("branched", algorithm)
    assert training("branched", "replay")[0] != training("branched", "sequential")[0]  # it bites
    assert not list(tmp_path.glob("branched/**/checkpoints"))


def test_summary_is_mean_and_population_std_over_runs(bench):
    lines = [
        {"seed": s, "ACC": acc, "BWT": -acc, "FWT": None, "forgetting": f, "wall_s": 10.0}
        for s, acc, f in ((0, 0.2, 0.0), (1, 0.4, 0.5), (2, 0.6, 0.1))
    ]
    row = bench.summary("plain", "replay", lines)
    assert (row["runs"], row["seeds"]) == (3, [0, 1, 2])
    assert row["ACC_mean"] == pytest.approx(0.4)
    assert row["ACC_std"] == pytest.approx((0.08 / 3) ** 0.5)
    assert row["BWT_mean"] == pytest.approx(-0.4)
    assert row["FWT_mean"] is None and row["FWT_std"] is None
    assert (row["wall_s_mean"], row["wall_s_std"]) == (10.0, 0.0)


def test_plan_order_and_config_precedence(bench, tmp_path, monkeypatch):
    args = bench.build_parser().parse_args(["--set", "max_steps_per_domain=5"])
    runs = bench.planned_runs(args)
    assert [(r.sequence, r.algorithm) for r in runs[:6]] == [
        ("interference", "sequential"),
        ("interference", "replay"),
        ("interference", "adaptive_replay"),
        ("interference", "warm_start_only"),
        ("plain", "sequential"),
        ("plain", "replay"),
    ]
    assert [r.seed for r in runs] == [0] * 6 + [1] * 6 + [2] * 6
    monkeypatch.setattr(bench, "GRPOConfig", dict)  # the fields a run's config is built from
    overrides = dict(args.overrides)
    plain = runs[-1].config(overrides, tmp_path)
    assert plain == {
        "max_steps_per_domain": 5,
        "cl_algorithm": "replay",
        "domains": ["airline", "retail", "telecom"],
        "seed": 2,
        "skills_seed": 2,
        "output_dir": str(tmp_path / "plain" / "replay" / "seed-2"),
    }
    warm = next(r for r in runs if r.algorithm == "warm_start_only").config(overrides, tmp_path)
    assert (warm["cl_algorithm"], warm["max_steps_per_domain"]) == ("sequential", 0)
    assert all(
        r.config(overrides, tmp_path)["tool_arguments_in_prompt"] is False
        for r in runs
        if r.sequence == "interference"
    )  # the interference sequence's prompts leave the arguments to be learned
    shown = runs[0].config({"tool_arguments_in_prompt": True}, tmp_path)  # --set wins
    assert shown["tool_arguments_in_prompt"] is True
    trunks = {
        (r.sequence, r.algorithm, r.seed): (t.sequence, t.algorithm, t.seed)
        for (r, t) in ((r, bench.branch_trunks(runs).get(r.key)) for r in runs)
        if t is not None
    }
    assert trunks == {
        (sequence, algorithm, seed): (sequence, "sequential", seed)
        for seed in (0, 1, 2)
        for sequence, algorithm in (
            ("interference", "replay"),
            ("interference", "adaptive_replay"),
            ("plain", "replay"),
        )
    }  # warm_start_only trains its first domain otherwise
    assert runs[0].config(overrides, tmp_path, trunk=True)["save_total_limit"] == 2
    assert "save_total_limit" not in runs[0].config(overrides, tmp_path)


def test_warm_start_only_trains_no_grpo_step(bench, tmp_path, tiny_model_dir, capsys, tiny):
    argv = ["--quick", "--algorithms", "warm_start_only", "--output_dir", str(tmp_path)]
    bench.main([*argv, "--model_name_or_path", str(tiny_model_dir), *tiny])
    run, _ = printed_lines(capsys)
    assert run["algorithm"] == "warm_start_only" and len(run["accuracy_matrix"]) == 2
    folder = tmp_path / "interference" / "warm_start_only" / "seed-0"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["global_steps"] == 0 and set(metrics["warm_start"]) == set(run["domains"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--algorithms", "nope"], "invalid choice: 'nope'"),
        (["--sequences", "nope"], "invalid choice: 'nope'"),
        (["--set", "not_a_field=1"], "not a GRPOConfig field"),
        (["--set", "seed=3"], "set by the benchmark"),
        (["--interference_domains", "airline"], "at least two domains"),
        (["--sequences", "plain", "--algorithms", "adaptive_replay"], "no run"),
        (["--set", "max_turns=0"], "max_turns"),
    ],
)
def test_bad_arguments_are_rejected_before_any_run(bench, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        bench.main([*argv, "--output_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    if argv[0] == "--algorithms":
        assert all(name in err for name in bench.ALGORITHMS)
    assert not list(tmp_path.iterdir())


def test_replay_channels_each_turn_one_off(bench, tmp_path, tokenizer, tiny_model, tiny_run):
    import random

    from tau2.continual_learning import GRPOConfig, GRPOTrainer
    from tau2.continual_learning.grpo.batch import replay_slots

    config = GRPOConfig(
        output_dir=str(tmp_path),
        **{**tiny_run, "cl_algorithm": "replay", "warm_start_demos_per_domain": 2},
    )
    trainer = GRPOTrainer(config, model=tiny_model, tokenizer=tokenizer)
    train = lambda d: trainer.tasks(d, "train")  # noqa: E731

    def channels(algorithm):
        trainer.cl_algorithm = algorithm
        demos = trainer.warm_start.replayed("telecom", 2, algorithm, train)
        slots = [replay_slots(algorithm, 4, random.Random(step)) for step in range(8)]
        return [e.task.domain for e in demos], slots

    replay_demos, replay_slots_ = channels(trainer.cl_algorithm)
    assert replay_demos == ["retail", "retail"] and sum(replay_slots_) > 0  # replay: both
    assert channels(bench.ReplayDemosOnly.from_config(config)) == (replay_demos, [0] * 8)
    assert channels(bench.ReplayGroupsOnly.from_config(config)) == ([], replay_slots_)
    # not in the default plan; asked for, they continue sequential's first domain
    assert not {"replay_demos_only", "replay_groups_only"} & {
        r.algorithm for r in bench.planned_runs(bench.build_parser().parse_args([]))
    }
    args = bench.build_parser().parse_args(
        ["--sequences", "interference", "--algorithms", "sequential", *bench.CHANNELS]
    )
    runs = bench.planned_runs(args)
    assert {
        r.algorithm: t.algorithm
        for r, t in ((r, bench.branch_trunks(runs).get(r.key)) for r in runs)
        if t
    } == {name: "sequential" for name in bench.CHANNELS}
