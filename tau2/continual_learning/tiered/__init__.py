"""Tiered replay storage and the consolidation of several agents into one.

- ``Lake``: disk-backed, memory-mapped replay store; each frame stored once; crash-consistent.
- ``Pond``: bounded ring buffer on the training device; pours into a lake, or is filled from one.
- ``ConsolidationSchedule``: K agents learn independently on their ponds; every phase the lake
  fills a big pond, a big agent trains on it and is cloned into the K agents.
- ``EpsilonSchedule``: piecewise-linear exploration that consolidation resets.

See docs/tiered.md.
"""

from tau2.continual_learning.tiered.consolidation import (
    Actor,
    Agent,
    ConsolidationSchedule,
    ScheduleConfig,
    StepResult,
)
from tau2.continual_learning.tiered.exploration import EpsilonSchedule
from tau2.continual_learning.tiered.lake import (
    Field,
    Lake,
    LakeEmptyError,
    LakeError,
    LakeFullError,
    LakeLockedError,
)
from tau2.continual_learning.tiered.metrics import MetricsLog
from tau2.continual_learning.tiered.pond import Pond, default_device

__all__ = [
    "Actor",
    "Agent",
    "ConsolidationSchedule",
    "EpsilonSchedule",
    "Field",
    "Lake",
    "LakeEmptyError",
    "LakeError",
    "LakeFullError",
    "LakeLockedError",
    "MetricsLog",
    "Pond",
    "ScheduleConfig",
    "StepResult",
    "default_device",
]
