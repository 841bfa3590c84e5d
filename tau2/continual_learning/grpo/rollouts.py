"""Episodes for a continual GRPO run: its tasks (cached per domain and split), its user
simulator, and batched rollouts with the current policy."""

from __future__ import annotations

import dataclasses
import functools
import logging
import random
from collections.abc import Callable
from typing import Any

from tau2.continual_learning.grpo.config import ConfigError, GRPOConfig
from tau2.continual_learning.grpo.seeds import Seeds
from tau2.continual_learning.grpo.token_batch import bf16_autocast
from tau2.continual_learning.grpo.vllm_budget import vllm_budget
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
from tau2.continual_learning.rollout.prompt import ChatFormat
from tau2.continual_learning.rollout.tasks import system_prompt

logger = logging.getLogger(__name__)


class Rollouts:
    """What the trainer samples with: one policy engine over the trained model, the user
    simulator, and the run's task lists."""

    def __init__(self, config: GRPOConfig, model: Any, tokenizer: Any) -> None:
        self.config = config
        self.model = model
        self._tasks: dict[tuple[str, str], list[DomainTask]] = {}
        self.max_context_tokens = context_limit(config, model, tokenizer, self.tasks)
        """The episodes' context limit (:func:`context_limit`), checked before any work."""
        self.policy = build_policy(config, model, tokenizer, self.max_context_tokens)
        self.user = build_user(config, model, tokenizer)

    def tasks(self, domain: str, split: str) -> list[DomainTask]:
        """Train, validation or test tasks of ``domain``: trivial tasks dropped from training if
        asked, the test split capped at ``eval_tasks_per_domain``, prompts without tool
        arguments if ``tool_arguments_in_prompt`` is false. ``validation`` is the train tasks
        in a fixed order seeded by the run's seed and the domain, so its first ``n`` are a
        fixed sample of ``n`` train tasks: what probes during training score (never the test
        split). They are not removed from training: a probe measures how well trained tasks
        are kept, and a run's training tasks do not depend on whether it probes."""
        key = (domain, split)
        if split == "validation" and key not in self._tasks:
            tasks = list(self.tasks(domain, "train"))
            random.Random(Seeds(self.config.seed).validation(domain)).shuffle(tasks)
            self._tasks[key] = tasks
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
            max_context_tokens=self.max_context_tokens,
            max_tool_response_chars=cfg.max_tool_response_chars or None,  # 0: whole
            temperature=temperature,
            scoring_workers=0,
            seed=seed,
            assistant_prefix=cfg.assistant_prefix,
        )
        with bf16_autocast(self.model, bool(cfg.bf16)), runner:
            return runner.run(tasks, num_generations=num_generations)


def model_window(model: Any) -> int | None:
    """The longest sequence ``model`` was built for: its (text) config's
    ``max_position_embeddings``, ``None`` where the config does not say."""
    config = model.config
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    return getattr(config, "max_position_embeddings", None)


def context_limit(
    config: GRPOConfig,
    model: Any,
    tokenizer: Any,
    tasks: Callable[[str, str], list[DomainTask]],
) -> int:
    """The run's episode context limit: ``max_context_tokens``, or the model's window when it
    is ``None``. Refuses (:class:`ConfigError`) a run whose prompts cannot fit, before any
    work: a domain whose longest system prompt (train and test ``tasks``, in the chat
    template, with the agent's turn prefix) plus one agent turn (``max_new_tokens_per_turn``)
    exceeds the limit; the message names the domain, its prompt length, the model's window
    and the setting to change. An explicit limit beyond the model's window is refused too."""
    window = model_window(model)
    limit = config.max_context_tokens
    if limit is None:
        if window is None:
            raise ConfigError(
                "max_context_tokens",
                limit,
                "an integer >= 64: the model's config has no max_position_embeddings to take "
                "its window from",
            )
        limit = window
    elif window is not None and limit > window:
        raise ConfigError(
            "max_context_tokens",
            limit,
            f"None (the model's window) or at most the model's window of {window:,} tokens "
            "(max_position_embeddings)",
        )
    chat = ChatFormat.from_tokenizer(tokenizer)
    turn = config.max_new_tokens_per_turn
    for domain in config.domains:
        prompts = {system_prompt(t) for split in ("train", "test") for t in tasks(domain, split)}
        longest = max(_prompt_tokens(chat, p, config.assistant_prefix) for p in prompts)
        if longest + turn <= limit:
            continue
        need = (
            f"the system prompt of {config.task_source} domain {domain!r} is {longest:,} tokens, "
            f"{longest + turn:,} with one agent turn (max_new_tokens_per_turn={turn})"
        )
        if window is None or limit < window:
            known = f"is {window:,} tokens" if window else "is not in its config"
            raise ConfigError(
                "max_context_tokens",
                config.max_context_tokens,
                f"{need}: raise --max_context_tokens (the model's window {known}) "
                f"or leave {domain!r} out (--domains)",
            )
        raise ConfigError(
            "domains",
            config.domains,
            f"{need}, more than the model's window of {limit:,} tokens "
            f"(max_position_embeddings): use a model with a longer window "
            f"(--model_name_or_path) or leave {domain!r} out (--domains)",
        )
    return limit


@functools.lru_cache(maxsize=4096)
def _prompt_tokens(chat: ChatFormat, system: str, assistant_prefix: str) -> int:
    """Tokens of an episode prompt with ``system`` and no turns yet (cached: the runs of a
    process check the same prompts again)."""
    return len(chat.prompt_ids(system, [], assistant_prefix))


def build_policy(config: GRPOConfig, model: Any, tokenizer: Any, context_limit: int) -> Policy:
    """The run's one sampling engine over ``model`` (see ``GRPOConfig.sampling_backend``):
    vLLM only for a model it serves (:meth:`GRPOConfig.settle_sampling_backend`), within the
    limits :func:`~tau2.continual_learning.grpo.vllm_budget.vllm_budget` resolves, both checked
    before the engine is built."""
    config.settle_sampling_backend(model.config)
    if config.sampling_backend == "vllm":
        budget = vllm_budget(config, model, context_limit, model_window(model))
        return VLLMPolicy.from_model(
            model,
            tokenizer,
            dtype="bfloat16" if config.bf16 else None,
            kv_cache_gb=config.vllm_kv_cache_gb,
            max_model_len=budget.max_model_len,
            gpu_memory_utilization=budget.gpu_memory_utilization,
            seed=config.seed,
        )
    return HFPolicy(model, tokenizer, lookup_tokens=config.prompt_lookup_tokens)


def build_user(config: GRPOConfig, model: Any, tokenizer: Any) -> UserModel | None:
    """The user simulator for tasks without a ticket (``None``: solo tasks only). ``auto``
    picks litellm when ``user_llm`` is set, solo for skill tasks, else an in-process user:
    ``user_model_name_or_path`` when set, else the policy model as it is before training (its
    base without the trained adapter, or a frozen copy: see :meth:`HFUser.frozen_base`), so
    the simulated customer never changes while the agent trains. Every user samples at
    ``user_temperature``, at most ``user_max_new_tokens`` tokens a reply."""
    mode = config.user_mode
    if mode == "auto":
        mode = "llm" if config.user_llm else ("solo" if config.task_source == "skills" else "hf")
    if mode == "solo":
        return None
    if mode == "llm":
        return LiteLLMUser(
            config.user_llm,
            api_base=config.user_api_base,
            temperature=config.user_temperature,
            llm_args={"max_tokens": config.user_max_new_tokens},
        )
    sampling = {
        "temperature": config.user_temperature,
        "max_new_tokens": config.user_max_new_tokens,
    }
    if config.user_model_name_or_path:
        user_model, user_tokenizer = load_model_and_tokenizer(config.user_model_name_or_path)
        return HFUser(user_model, user_tokenizer, **sampling)
    return HFUser.frozen_base(model, tokenizer, **sampling)
