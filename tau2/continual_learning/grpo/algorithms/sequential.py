"""Sequential training: no replay, the forgetting baseline."""

from __future__ import annotations

from tau2.continual_learning.cl_algorithm import GRPO_ALGORITHMS, CLAlgorithm


@GRPO_ALGORITHMS.register("sequential")
class SequentialCL(CLAlgorithm):
    """No replay: domains are trained one after another (the forgetting baseline)."""
