"""Replay-buffer building blocks shared by the supervised and GRPO trainers: insertion
policies (generic over items), a CPU tensor memory, read-time augmentation, MIR retrieval and a
k-means prototype memory."""

from tau2.continual_learning.insertion_policies import (
    POLICIES,
    BalancedLossAwareReservoirPolicy,
    BalancedReservoirPolicy,
    ClassBalancedReservoirPolicy,
    FIFOPolicy,
    InsertionPolicy,
    LossAwareReservoirPolicy,
    ReservoirPolicy,
    make_insertion_policy,
)
from tau2.continual_learning.supervised.memory.augment import (
    AWGN,
    Compose,
    GaussianNoise,
    RandomShift,
    make_augmentation,
)
from tau2.continual_learning.supervised.memory.kmeans import KMeansMemory
from tau2.continual_learning.supervised.memory.retrieval import mir_retrieve
from tau2.continual_learning.supervised.memory.tensor_memory import TensorMemory

__all__ = [
    "AWGN",
    "POLICIES",
    "BalancedLossAwareReservoirPolicy",
    "BalancedReservoirPolicy",
    "ClassBalancedReservoirPolicy",
    "Compose",
    "FIFOPolicy",
    "GaussianNoise",
    "InsertionPolicy",
    "KMeansMemory",
    "LossAwareReservoirPolicy",
    "RandomShift",
    "ReservoirPolicy",
    "TensorMemory",
    "make_augmentation",
    "make_insertion_policy",
    "mir_retrieve",
]
