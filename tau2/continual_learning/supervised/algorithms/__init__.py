"""Tensor-level continual-learning methods, registered in ``SUPERVISED_ALGORITHMS`` on import.

Names: ``naive``, ``er``, ``er_reservoir``, ``er_lars``, ``brs``, ``brs_lars``, ``iba``,
``soft_replay``, ``mir``, ``vib_replay``, ``distill``, ``kmeans_memory``,
``generative_replay``.
"""

from tau2.continual_learning.cl_algorithm import SUPERVISED_ALGORITHMS
from tau2.continual_learning.supervised.algorithms.generative import (
    GenerativeReplay,
    build_generator,
    save_sample_grid,
)
from tau2.continual_learning.supervised.algorithms.replay import (
    AugmentedER,
    BalancedLossAwareER,
    BalancedReservoirER,
    DistillationER,
    ExperienceReplay,
    KMeansReplay,
    LossAwareER,
    MaximallyInterferedER,
    NaiveCL,
    ReservoirER,
    SoftTargetER,
    VIBReplay,
    frozen_snapshot,
)


def available_cl_algorithms() -> list[str]:
    """Names ``ContinualTrainerConfig.cl_algorithm`` accepts."""
    return SUPERVISED_ALGORITHMS.names()


__all__ = [
    "AugmentedER",
    "BalancedLossAwareER",
    "BalancedReservoirER",
    "DistillationER",
    "ExperienceReplay",
    "GenerativeReplay",
    "KMeansReplay",
    "LossAwareER",
    "MaximallyInterferedER",
    "NaiveCL",
    "ReservoirER",
    "SoftTargetER",
    "VIBReplay",
    "available_cl_algorithms",
    "build_generator",
    "frozen_snapshot",
    "save_sample_grid",
]
