"""The consolidation schedule with the example's real DQN agents on MinAtar (and ALE)."""

from __future__ import annotations

import torch

from tau2.continual_learning.tiered import Lake, checkpoint

TIMING = {"fps", "seconds"}


def tiny_args(out, *extra: str) -> list[str]:
    return [
        "--out", str(out),
        "--agents", "2",
        "--total-frames", "200",
        "--phase-steps", "50",
        "--consolidation-updates", "20",
        "--replay-ratio", "4",
        "--learning-starts", "20",
        "--pond-capacity", "64",
        "--big-pond-capacity", "128",
        "--lake-capacity", "2000",
        "--target-every", "10",
        "--epsilon-decay-steps", "100",
        "--eval-episodes", "0",
        "--no-progress",
        *extra,
    ]  # fmt: skip


def test_pond_lake_big_pond_counts_follow_the_schedule(example, tmp_path):
    schedule = example.build(example.parse_args(tiny_args(tmp_path)))
    (independent,) = schedule.run(max_phases=1)
    assert independent["kind"] == "independent"
    assert len(schedule.lake) == schedule.frames == 2 * 50  # every step of both agents
    assert all(p.added == p.poured == 50 and p.unpoured == 0 for p in schedule.ponds)
    (consolidation,) = schedule.run(max_phases=1)
    assert consolidation["filled"] == 100  # min(big pond capacity 128, lake size 100)
    assert schedule.big_pond.poured == 20 // 4  # one own step per 4 updates, poured too
    assert len(schedule.lake) == schedule.frames == 105
    schedule.lake.close()


def test_cloning_copies_weights_and_resets_exploration(example, tmp_path):
    schedule = example.build(example.parse_args(tiny_args(tmp_path, "--epsilon-reset", "0.5")))
    schedule.run(max_phases=1)
    big = schedule.big_agent
    assert all(a.epsilon.steps == 50 for a in schedule.agents)
    assert not torch.equal(schedule.agents[0].net[0].weight, big.net[0].weight)
    schedule.run(max_phases=1)
    for agent in schedule.agents:
        for mine, theirs in zip(agent.net.parameters(), big.net.parameters(), strict=True):
            assert torch.equal(mine, theirs) and mine.data_ptr() != theirs.data_ptr()
        assert agent.epsilon.steps == 0 and agent.epsilon.value() == 0.5
        assert agent.epsilon.resets == 1
        assert not torch.equal(agent.rng.get_state(), big.rng.get_state())
    assert big.epsilon.resets == 1
    schedule.lake.close()


def _final_state(out) -> dict:
    return checkpoint.load(checkpoint.list_checkpoints(out / "checkpoints")[-1])


def _records(schedule) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in schedule.metrics.records()]


def test_checkpoint_resume_gives_the_same_run(example, tmp_path):
    straight = example.build(example.parse_args(tiny_args(tmp_path / "a")))
    straight.run()
    straight.lake.close()

    interrupted = example.build(example.parse_args(tiny_args(tmp_path / "b")))
    interrupted.run(max_phases=3)
    interrupted.independent_phase()  # work after the last checkpoint, then a "crash"
    interrupted.lake.close()
    resumed = example.build(example.parse_args(tiny_args(tmp_path / "b")))
    assert (resumed.phase, len(resumed.lake)) == (3, 205)  # lake rolled back to the checkpoint
    resumed.run()
    resumed.lake.close()

    a, b = _final_state(tmp_path / "a"), _final_state(tmp_path / "b")
    assert (a["phase"], a["frames"]) == (b["phase"], b["frames"]) == (4, 210)
    for key in ("big_agent", "agents", "ponds"):
        assert _same(a[key], b[key]), key
    assert _records(straight) == _records(resumed)
    with Lake.open(tmp_path / "a" / "lake") as la, Lake.open(tmp_path / "b" / "lake") as lb:
        assert len(la) == len(lb) == 210
        idx = torch.arange(len(la))
        assert all(torch.equal(x, lb.get(idx)[k]) for k, x in la.get(idx).items())


def _same(x, y) -> bool:
    if isinstance(x, torch.Tensor):
        return torch.equal(x, y)
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    if isinstance(x, list | tuple):
        return len(x) == len(y) and all(_same(u, v) for u, v in zip(x, y, strict=True))
    return x == y


def test_example_runs_at_tiny_scale_and_plots(example, tmp_path):
    png = tmp_path / "curve.png"
    records = example.main(tiny_args(tmp_path / "run", "--eval-episodes", "1", "--plot", str(png)))
    assert [r["kind"] for r in records] == ["independent", "consolidation"] * 2
    assert records[-1]["frames"] == 210 and "eval_return" in records[-1]
    assert png.stat().st_size > 0


def test_atari_frames_cost_about_half_of_two_observations(example, tmp_path):
    records = example.main(
        [
            *tiny_args(tmp_path / "ale", "--env", "ale:Pong"),
            *("--total-frames", "160", "--phase-steps", "20", "--consolidation-updates", "4"),
        ]
    )
    assert records[-1]["frames"] == 4 * (2 * 20 + 1)  # frame skip 4; then one big-agent step
    with Lake.open(tmp_path / "ale" / "lake", readonly=True) as lake:
        assert lake.fields["obs"].shape == (3, 84, 84)
        per_transition = lake.disk_bytes() / len(lake)
    assert per_transition < 1.25 * 3 * 84 * 84  # one frame (plus breaks), not two
