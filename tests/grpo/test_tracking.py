"""report_to reaches the trackers with the continual metrics: a real run with TensorBoard writes
one event file for the whole run, holding each accuracy-matrix row, ACC and the phase scores at
each domain's end, and TRL's step logs on the run's global step."""

from __future__ import annotations

from pathlib import Path

import pytest

from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.grpo.record import RunRecord
from tau2.continual_learning.grpo.tracking import domain_end_logs

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the TensorBoard event files under ``run_dir``: ``[(step, value)]``."""
    events = event_accumulator.EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_tensorboard_gets_each_domain_end_on_the_global_step(
    tmp_path, tokenizer, tiny_model, tiny_run
):
    steps = 1  # per-domain counting would log both domain ends (and steps) at 1
    config = GRPOConfig(
        output_dir=str(tmp_path),
        **{**tiny_run, "report_to": ["tensorboard"], "max_steps_per_domain": steps},
    )
    trainer = GRPOTrainer(config, model=tiny_model, tokenizer=tokenizer)
    metrics = trainer.train()

    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1  # one tracker run for the whole continual run, not one per domain
    logged = scalars(runs[0])
    domains, matrix = metrics["domains"], metrics["accuracy_matrix"]
    ends = [steps * (i + 1) for i in range(len(domains))]
    for j, domain in enumerate(domains):  # column j: one point per accuracy-matrix row
        assert logged[f"eval/score/{domain}"] == [
            (end, pytest.approx(row[j])) for end, row in zip(ends, matrix, strict=True)
        ]
        after_grpo = metrics["phase_scores"][domain]["after_grpo"]
        assert logged[f"eval/phase/{domain}/after_grpo"] == [(ends[j], pytest.approx(after_grpo))]
    assert logged["eval/ACC"][-1] == (ends[-1], pytest.approx(metrics["ACC"]))
    assert logged["eval/BWT"] == [(ends[-1], pytest.approx(metrics["BWT"]))]  # from row 2 on
    assert logged["eval/cl/total_replay_samples"][-1][0] == ends[-1]
    # TRL's step logs go to the same run, counted over the whole run (not from 0 per domain)
    assert [step for step, _ in logged["train/reward"]] == list(range(1, steps * len(domains) + 1))


def test_domain_end_logs_leave_out_what_is_not_defined_yet():
    record = RunRecord(domains=["airline", "retail"], baseline=[0.1, 0.2])
    record.accuracy_matrix.append([0.5, 0.3])
    record.phase_scores["airline"] = {"before": 0.1, "after_grpo": 0.5}
    logs = domain_end_logs(
        record, "airline", {"algorithm": "replay", "sizes": {"airline": 4}, "on": True}
    )
    assert logs == {
        "eval_score/airline": 0.5,
        "eval_score/retail": 0.3,
        "eval_ACC": 0.5,  # over the domains trained so far
        "eval_phase/airline/before": 0.1,
        "eval_phase/airline/after_grpo": 0.5,
        "eval_cl/sizes/airline": 4.0,
    }  # no BWT, FWT or forgetting after one domain; text and flags are not numbers to plot
