"""Episodes for a continual GRPO run: its tasks (cached per domain and split), its user
simulator, and batched rollouts with the current policy."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from tau2.continual_learning.grpo.config import GRPOConfig
from tau2.continual_learning.grpo.token_batch import bf16_autocast
from tau2.continual_learning.model_loading import load_model_and_tokenizer
from tau2.continual_learning.rollout import (
    DomainTask,
    Episode,
    EpisodeRunner,
    HFPolicy,
    HFUser,
    LiteLLMUser,
    Policy,
    UserModel,
    VLLMPolicy,
    load_tasks,
)

logger = logging.getLogger(__name__)


class Rollouts:
    """What the trainer samples with: one policy engine over the trained model, the user
    simulator, and the run's task lists."""

    def __init__(self, config: GRPOConfig, model: Any, tokenizer: Any) -> None:
        self.config = config
        self.model = model
        self.policy = build_policy(config, model, tokenizer)
        self.user = build_user(config, model, tokenizer)
        self._tasks: dict[tuple[str, str], list[DomainTask]] = {}

    def tasks(self, domain: str, split: str) -> list[DomainTask]:
        """Train or test tasks of ``domain``: trivial tasks dropped from training if asked, the
        test split capped at ``eval_tasks_per_domain``, prompts without tool arguments if
        ``tool_arguments_in_prompt`` is false."""
        key = (domain, split)
        if key not in self._tasks:
            cfg = self.config
            tasks = load_tasks(domain, split, cfg.task_source, seed=cfg.skills_seed)
            if split == "train" and cfg.exclude_trivial_tasks:
                tasks = [t for t in tasks if not t.trivial] or tasks
            if split == "test" and cfg.eval_tasks_per_domain is not None:
                tasks = tasks[: cfg.eval_tasks_per_domain]
            if not cfg.tool_arguments_in_prompt:
                tasks = [dataclasses.replace(t, tool_arguments=False) for t in tasks]
            self._tasks[key] = tasks
        return self._tasks[key]

    def close(self) -> None:
        """Shut the sampling engine down (a vLLM engine holds its KV cache until then)."""
        close = getattr(self.policy, "close", None)
        if close is not None:
            close()

    def run(
        self, tasks: list[DomainTask], num_generations: int, temperature: float, seed: int
    ) -> list[Episode]:
        """Episodes of ``tasks`` (each ``num_generations`` times, consecutively) with the
        current weights, under bf16 autocast when configured."""
        cfg = self.config
        runner = EpisodeRunner(
            self.policy,
            user=self.user,
            max_turns=cfg.max_turns,
            max_new_tokens_per_turn=cfg.max_new_tokens_per_turn,
            max_context_tokens=cfg.max_context_tokens,
            max_tool_response_chars=cfg.tool_response_limit,
            temperature=temperature,
            scoring_workers=0,
            seed=seed,
            assistant_prefix=cfg.agent_turn_prefix,
        )
        with bf16_autocast(self.model, bool(cfg.bf16)), runner:
            return runner.run(tasks, num_generations=num_generations)


def build_policy(config: GRPOConfig, model: Any, tokenizer: Any) -> Policy:
    """The run's one sampling engine over ``model`` (see ``GRPOConfig.rollout_backend``)."""
    if config.sampling_backend == "vllm":
        return VLLMPolicy.from_model(
            model,
            tokenizer,
            dtype="bfloat16" if config.bf16 else None,
            kv_cache_gb=config.vllm_kv_cache_gb,
            seed=config.seed,
        )
    return HFPolicy(model, tokenizer, lookup_tokens=config.prompt_lookup_tokens)


def build_user(config: GRPOConfig, model: Any, tokenizer: Any) -> UserModel | None:
    """The user simulator for tasks without a ticket (``None``: solo tasks only). ``auto``
    picks litellm when ``user_llm`` is set, solo for skill tasks, else an in-process user:
    ``user_model_name_or_path`` when set, else the policy model as it is before training (its
    base without the trained adapter, or a frozen copy: see :meth:`HFUser.frozen_base`), so
    the simulated customer never changes while the agent trains. Every user samples at
    ``user_temperature``."""
    mode = config.user_mode
    if mode == "auto":
        mode = "llm" if config.user_llm else ("solo" if config.task_source == "skills" else "hf")
    if mode == "solo":
        return None
    if mode == "llm":
        return LiteLLMUser(
            config.user_llm, api_base=config.user_api_base, temperature=config.user_temperature
        )
    if config.user_model_name_or_path:
        user_model, user_tokenizer = load_model_and_tokenizer(config.user_model_name_or_path)
        return HFUser(user_model, user_tokenizer, temperature=config.user_temperature)
    return HFUser.frozen_base(model, tokenizer, temperature=config.user_temperature)
