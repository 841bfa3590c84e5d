"""The tau2 episode engine: batched multi-turn rollouts on real tau2 domains, scored by tau2's
own evaluators, returned as GRPO-ready token data. See ``docs/rollout.md``."""

from __future__ import annotations

from tau2.continual_learning.rollout.domains import (
    DomainTask,
    available_domains,
    get_task,
    load_tasks,
    policy_text,
    tool_schemas,
)
from tau2.continual_learning.rollout.episode import Episode, EpisodeLimits, Termination
from tau2.continual_learning.rollout.policy import Generation, HFPolicy, Policy, SamplingParams
from tau2.continual_learning.rollout.runner import EpisodeRunner
from tau2.continual_learning.rollout.scoring import Scorer, score_trajectory
from tau2.continual_learning.rollout.tool_format import CALL_PREFIX, format_call, parse_turn
from tau2.continual_learning.rollout.user import HFUser, LiteLLMUser, UserModel
from tau2.continual_learning.rollout.vllm_policy import VLLMPolicy

__all__ = [
    "CALL_PREFIX",
    "DomainTask",
    "Episode",
    "EpisodeLimits",
    "EpisodeRunner",
    "Generation",
    "HFPolicy",
    "HFUser",
    "LiteLLMUser",
    "Policy",
    "SamplingParams",
    "Scorer",
    "Termination",
    "UserModel",
    "VLLMPolicy",
    "available_domains",
    "format_call",
    "get_task",
    "load_tasks",
    "parse_turn",
    "policy_text",
    "score_trajectory",
    "tool_schemas",
]
