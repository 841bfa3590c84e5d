"""Tensor-level continual-learning methods, registered as ``CLAlgorithm``s on import.

Names: ``naive``, ``er``, ``er_reservoir``, ``er_lars``, ``brs``, ``brs_lars``, ``iba``,
``soft_replay``, ``mir``, ``vib_replay``, ``distill``, ``kmeans_memory``,
``generative_replay``.
"""

from tau2.continual_learning.algorithms.generative import (
    GenerativeReplay,
    build_generator,
    save_sample_grid,
)
from tau2.continual_learning.algorithms.replay import (
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
    "build_generator",
    "frozen_snapshot",
    "save_sample_grid",
]
