"""Supervised (tensor-level) continual learning: trainer, models, data, sweeps."""

from tau2.continual_learning.supervised.batch import Batch
from tau2.continual_learning.supervised.config import ContinualTrainerConfig, load_config
from tau2.continual_learning.supervised.data import (
    TaskData,
    load_task_file,
    permuted_digits,
    split_digits,
    synthetic_channel_tasks,
    tensor_tasks,
)
from tau2.continual_learning.supervised.models import (
    MLP,
    VAE,
    ConvVAE,
    LSTMRegressor,
    VIBNet,
    freeze_submodules,
)
from tau2.continual_learning.supervised.trainer import (
    ContinualTrainer,
    LossExplosionError,
    StepRecord,
    TaskResult,
    build_cl_algorithm,
)

__all__ = [
    "MLP",
    "VAE",
    "Batch",
    "ContinualTrainer",
    "ContinualTrainerConfig",
    "ConvVAE",
    "LSTMRegressor",
    "LossExplosionError",
    "StepRecord",
    "TaskData",
    "TaskResult",
    "VIBNet",
    "build_cl_algorithm",
    "freeze_submodules",
    "load_config",
    "load_task_file",
    "permuted_digits",
    "split_digits",
    "synthetic_channel_tasks",
    "tensor_tasks",
]
