"""The GRPO wing's continual-learning algorithms, registered in ``GRPO_ALGORITHMS``.

Batch composition (:func:`~tau2.continual_learning.grpo.batch.compose_batch`): the trainer
reserves a :class:`ReplayCL`'s ``num_replay_slots(B)`` of a step's ``B`` task groups for replay
(once per step, told to the algorithm as ``self._trainer.replay_slots``), hands
``augment_batch`` the ``B - slots`` new tasks, and tops the result up with new tasks when the
algorithm could not fill its slots (buffer below ``min_buffer_size``). Returned tasks whose key
is not among the offered new tasks are the replayed ones; each gets ``num_samples_per_prompt``
fresh rollouts like any other, so GRPO's group structure is kept.
"""

from __future__ import annotations

from tau2.continual_learning.cl_algorithm import GRPO_ALGORITHMS, CLAlgorithm
from tau2.continual_learning.grpo.algorithms.adaptive import AdaptiveReplayCL
from tau2.continual_learning.grpo.algorithms.clear import CLEARCL, behaviour_kl
from tau2.continual_learning.grpo.algorithms.replay import ReplayCL
from tau2.continual_learning.grpo.algorithms.sequential import SequentialCL

register_cl_algorithm = GRPO_ALGORITHMS.register
"""Class decorator registering a GRPO :class:`CLAlgorithm` under a name for ``GRPOConfig``."""


def available_cl_algorithms() -> list[str]:
    """Names ``GRPOConfig.cl_algorithm`` accepts."""
    return GRPO_ALGORITHMS.names()


def get_cl_algorithm_class(name: str) -> type[CLAlgorithm]:
    """The GRPO algorithm class registered as ``name``."""
    return GRPO_ALGORITHMS.get(name)


__all__ = [
    "CLEARCL",
    "GRPO_ALGORITHMS",
    "AdaptiveReplayCL",
    "CLAlgorithm",
    "ReplayCL",
    "SequentialCL",
    "available_cl_algorithms",
    "behaviour_kl",
    "get_cl_algorithm_class",
    "register_cl_algorithm",
]
