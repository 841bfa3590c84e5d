"""What a GRPO algorithm may read from the trainer: the plugin contract's one channel.

An algorithm gets a :class:`TrainerView` as ``self._trainer`` (from
:meth:`~tau2.continual_learning.cl_algorithm.CLAlgorithm.attach`) and as the ``trainer``
argument of its hooks: the same object both ways. It is read-only; everything else of the
trainer is internal, and what an algorithm decides goes back through its hooks' return values
(``augment_batch``, ``extra_loss``, ``warm_start_replay``).
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any


def _read_only(path: str, doc: str) -> Any:
    """A read-only attribute of the view: the trainer's attribute at ``path``."""
    get = attrgetter(path)
    return property(lambda view: get(view._run), doc=doc)


class TrainerView:
    """Read-only view of a running :class:`~tau2.continual_learning.grpo.trainer.GRPOTrainer`.

    - ``domains``: the domain sequence; ``current_domain``; ``domain_index`` (0-based);
    - ``global_step``: optimizer steps so far, over all domains;
    - ``replay_slots``: task groups of the step being composed that are offered for replay
      (set by the trainer before it calls ``augment_batch``; see
      :func:`~tau2.continual_learning.grpo.batch.replay_slots`);
    - ``trajectory_buffer``: finished episodes per domain
      (:class:`~tau2.continual_learning.grpo.trajectory_buffer.TrajectoryBuffer`: ``sample``,
      ``size``, ``sizes``, ``records``);
    - ``probe(domains, num_tasks)``: quick scores of some domains now, on ``num_tasks`` of
      each one's validation tasks (a fixed seeded sample of its train tasks; never test tasks);
    - ``latest_scores()``: the last accuracy-matrix row as ``{domain: score}``;
    - ``tokenizer`` and ``model`` (for an ``extra_loss``); ``config`` (read only).
    """

    __slots__ = ("_run",)

    current_domain = _read_only("current_domain", "The domain being trained.")
    domain_index = _read_only("record.domain_index", "Its index in ``domains`` (0-based).")
    global_step = _read_only("record.global_step", "Optimizer steps so far, over all domains.")
    replay_slots = _read_only("step.replay_slots", "Task groups offered for replay this step.")
    trajectory_buffer = _read_only("trajectory_buffer", "Finished episodes per domain.")
    tokenizer = _read_only("tokenizer", "The policy's tokenizer.")
    model = _read_only("model", "The trained model.")
    config = _read_only("config", "The run's GRPOConfig (read only).")

    def __init__(self, trainer: Any) -> None:
        self._run = trainer

    @property
    def domains(self) -> list[str]:
        """The domain sequence."""
        return list(self._run.config.domains)

    def probe(self, domains: list[str], num_tasks: int) -> dict[str, float]:
        """Quick scores on ``num_tasks`` validation tasks of each of ``domains``."""
        return self._run.probe(domains, num_tasks)

    def latest_scores(self) -> dict[str, float]:
        """The last accuracy-matrix row as ``{domain: score}``."""
        return self._run.record.latest_scores()
