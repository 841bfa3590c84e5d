"""The import path users write for the GRPO wing's algorithms:
``from tau2.continual_learning.continual_learning import CLAlgorithm, ReplayCL, AdaptiveReplayCL``.

The algorithms live in :mod:`tau2.continual_learning.grpo.algorithms`; this module re-exports
them (and the plugin base) under the name the user documentation has always used.
"""

from tau2.continual_learning.grpo.algorithms import (
    CLEARCL,
    AdaptiveReplayCL,
    CLAlgorithm,
    ReplayCL,
    SequentialCL,
    available_cl_algorithms,
    get_cl_algorithm_class,
    register_cl_algorithm,
)

__all__ = [
    "CLEARCL",
    "AdaptiveReplayCL",
    "CLAlgorithm",
    "ReplayCL",
    "SequentialCL",
    "available_cl_algorithms",
    "get_cl_algorithm_class",
    "register_cl_algorithm",
]
