"""Phase attribution: each domain's score before its training, after its warm start and after
its GRPO steps, kept in the run record (and its checkpoint state); the warm start's replay is
the algorithm's decision."""

from __future__ import annotations

from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.continual_learning import SequentialCL
from tau2.continual_learning.grpo.evaluation import Score
from tau2.continual_learning.grpo.record import RunRecord


def scores(*means: float) -> list[Score]:
    return [Score(m, 0.0, 1.0, 2, (m, m)) for m in means]


def test_the_record_attributes_each_domain_to_its_phases():
    record = RunRecord(domains=["airline", "retail"])
    record.set_baseline(scores(0.1, 0.2))
    record.begin_domain("airline")
    record.phase_scores["airline"]["after_warm_start"] = 0.5
    record.add_row("airline", scores(0.6, 0.3))
    record.begin_domain("retail")  # no warm start: no after_warm_start entry
    record.add_row("retail", scores(0.4, 0.9))
    assert record.phase_scores == {
        "airline": {"before": 0.1, "after_warm_start": 0.5, "after_grpo": 0.6},
        "retail": {"before": 0.3, "after_grpo": 0.9},  # before: the previous row, not baseline
    }
    assert record.metrics(seed=0, about={})["phase_scores"] == record.phase_scores

    restored = RunRecord(domains=["airline", "retail"])
    restored.load_state_dict(record.state_dict())
    assert restored == record
    older = {k: v for k, v in record.state_dict().items() if k != "phase_scores"}
    restored.load_state_dict(older)  # a checkpoint written before phase scores existed
    assert restored.phase_scores == {} and restored.accuracy_matrix == record.accuracy_matrix


def test_the_extra_scoring_can_be_turned_off(tmp_path, tokenizer, tiny_model, tiny_run):
    settings = {**tiny_run, "domains": ["telecom"], "max_steps_per_domain": 0}
    settings.update(warm_start_demos_per_domain=1, score_after_warm_start=False)
    trainer = GRPOTrainer(
        GRPOConfig(output_dir=str(tmp_path), **settings), model=tiny_model, tokenizer=tokenizer
    )
    assert set(trainer.train()["phase_scores"]["telecom"]) == {"before", "after_grpo"}


class ReplayRetailDemos(SequentialCL):
    """No replay in GRPO steps, one retail demonstration in every later warm start."""

    def warm_start_replay(self, domain, num_demos, rng):
        return {"retail": 1} if domain != "retail" else {}


def test_the_algorithm_decides_the_warm_start_replay(tmp_path, tokenizer, tiny_model, tiny_run):
    settings = {**tiny_run, "cl_algorithm": "sequential", "warm_start_demos_per_domain": 2}
    trainer = GRPOTrainer(
        GRPOConfig(output_dir=str(tmp_path), **settings), model=tiny_model, tokenizer=tokenizer
    )
    train = lambda d: trainer.tasks(d, "train")  # noqa: E731
    assert trainer.warm_start.replayed("telecom", 2, trainer.cl_algorithm, train) == []
    chosen = trainer.warm_start.replayed("telecom", 2, ReplayRetailDemos(), train)
    assert [e.task.domain for e in chosen] == ["retail"]
