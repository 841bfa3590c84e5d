"""The tau2 episode runner: batched multi-turn rollouts on real tau2 domains, scored by tau2's
own evaluators, returned as GRPO-ready token data. See ``docs/rollout.md``.

Three layers: ``engines/`` sample tokens (plain transformers, vLLM), the episode protocol at this
level (runner, episode state machine, tool-call format, chat framing, users, environments,
scoring, the scripted gold policy) turns samples into tau2 conversations, and ``tasks/`` says
which tasks there are and what the agent is told about them."""

from __future__ import annotations

from tau2.continual_learning.rollout.engines.base import Generation, Policy, SamplingParams
from tau2.continual_learning.rollout.engines.hf import HFPolicy
from tau2.continual_learning.rollout.engines.vllm import VLLMPolicy
from tau2.continual_learning.rollout.environments import policy_text, tool_schemas
from tau2.continual_learning.rollout.episode import Episode, EpisodeLimits, Termination
from tau2.continual_learning.rollout.runner import EpisodeRunner
from tau2.continual_learning.rollout.scoring import Scorer, score_trajectory
from tau2.continual_learning.rollout.tasks import (
    DomainTask,
    TaskSource,
    available_domains,
    get_task,
    load_tasks,
)
from tau2.continual_learning.rollout.tool_format import CALL_PREFIX, format_call, parse_turn
from tau2.continual_learning.rollout.users import HFUser, LiteLLMUser, UserModel

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
    "TaskSource",
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
