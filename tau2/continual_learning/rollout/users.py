"""User simulators for episodes without a ticket (airline, retail, and telecom in user mode).

* :class:`LiteLLMUser` is tau2's own ``UserSimulator`` talking to any litellm model string,
  e.g. ``hosted_vllm/NAME`` with ``api_base="http://127.0.0.1:PORT/v1"``; the requests of one
  turn run concurrently in threads (they are network-bound). It supports user tools (telecom).
* :class:`HFUser` is an in-process transformers model prompted with tau2's user-simulator
  prompt, batched like the agent (one ``generate`` per turn). Text only: no user tools.
  :meth:`HFUser.frozen_base` simulates the user with the model being trained as it was before
  training (a PEFT model's base, or a frozen copy), so the customer does not change while the
  agent learns.

Both implement :class:`UserModel`; ``user=None`` or ``"solo"`` means no user (ticket tasks).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from tau2.data_model.message import Message, MultiToolMessage, ToolMessage, UserMessage

from tau2.continual_learning.rollout.engines.base import SamplingParams
from tau2.continual_learning.rollout.engines.hf import HFPolicy

if TYPE_CHECKING:
    from tau2.environment.environment import Environment
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tau2.continual_learning.rollout.domain_task import DomainTask

logger = logging.getLogger(__name__)

UserRequest = tuple[Any, "Message | list[ToolMessage]"]


@runtime_checkable
class UserModel(Protocol):
    """A batched user simulator: per-episode state from :meth:`start`, replies in batches."""

    def start(self, task: DomainTask, env: Environment) -> Any:
        """Per-episode user state (history, scenario)."""
        ...

    def reply(
        self, requests: list[UserRequest], seed: int | None = None
    ) -> list[UserMessage | BaseException]:
        """Answer each ``(state, message)``: an agent message, or results of the user's own
        tool calls. A failure is returned in place (it ends only that episode)."""
        ...


def resolve_user(user: UserModel | str | None) -> UserModel | None:
    """``None``/``"solo"`` -> no user; a :class:`UserModel` passes through; else ValueError."""
    if user is None or user == "solo":
        return None
    if isinstance(user, UserModel):
        return user
    raise ValueError(
        f"user must be None, 'solo', or a UserModel such as LiteLLMUser(...) or HFUser(...); got {user!r}"
    )


def user_system_prompt(task: DomainTask, *, with_tools: bool) -> str:
    """tau2's user-simulator system prompt (guidelines + the task's scenario)."""
    from tau2.user.user_simulator import SYSTEM_PROMPT, get_global_user_sim_guidelines

    return SYSTEM_PROMPT.format(
        global_user_sim_guidelines=get_global_user_sim_guidelines(use_tools=with_tools),
        instructions=str(task.task.user_scenario),
    )


class LiteLLMUser:
    """tau2's ``UserSimulator`` via litellm (any OpenAI-compatible endpoint)."""

    def __init__(
        self,
        llm: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        temperature: float = 0.0,
        llm_args: dict[str, Any] | None = None,
        max_concurrency: int = 16,
    ) -> None:
        self.llm = llm
        self.llm_args: dict[str, Any] = {"temperature": temperature, **(llm_args or {})}
        if api_base is not None:
            self.llm_args["api_base"] = api_base
        if api_key is not None:
            self.llm_args["api_key"] = api_key
        self.max_concurrency = max_concurrency

    def start(self, task: DomainTask, env: Environment) -> Any:
        from tau2.user.user_simulator import UserSimulator

        tools = env.get_user_tools() if env.user_tools is not None else None
        simulator = UserSimulator(
            tools=tools,
            instructions=str(task.task.user_scenario),
            llm=self.llm,
            llm_args=dict(self.llm_args),
        )
        return simulator, simulator.get_init_state()

    def reply(
        self, requests: list[UserRequest], seed: int | None = None
    ) -> list[UserMessage | BaseException]:
        def one(request: UserRequest) -> UserMessage | BaseException:
            (simulator, state), message = request
            if isinstance(message, list):
                message = MultiToolMessage(role="tool", tool_messages=message)
            try:
                return simulator.generate_next_message(message, state)[0]
            except Exception as exc:  # network or server errors end only this episode
                return exc

        workers = max(1, min(self.max_concurrency, len(requests)))
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, requests))


class HFUser:
    """An in-process transformers user model, batched like the agent (text only), sampled greedily
    by default (``temperature=0``, as :class:`LiteLLMUser`).

    It samples through an :class:`HFPolicy` of its own, so its prefix cache never holds the
    agent's keys/values, nor the agent's its. ``model`` is used as it is (a separately loaded
    user model); :meth:`frozen_base` makes the user of a model that is being trained.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_batch_size: int = 64,
    ) -> None:
        self.model = model
        self.backend = HFPolicy(model, tokenizer, max_batch_size=max_batch_size)
        self.tokenizer = tokenizer
        self.sampling = SamplingParams(
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p
        )
        self._sampling_context: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext

    @classmethod
    def frozen_base(
        cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, **kwargs: Any
    ) -> HFUser:
        """The user simulated by ``model`` as it is now, unchanged while ``model`` trains.

        For a PEFT model that is its base model: sampled with the adapters switched off (PEFT's
        ``disable_adapter``), the base weights being frozen in adapter training; no memory is
        added. Any other model (full fine-tuning) is copied once, and the frozen copy samples
        the user (the model's size again in memory)."""
        from peft import PeftModel

        if isinstance(model, PeftModel):
            user = cls(model.get_base_model(), tokenizer, **kwargs)
            user._sampling_context = model.disable_adapter
            return user
        frozen = copy.deepcopy(model).eval().requires_grad_(False)
        logger.info(
            "The in-process user is a frozen copy of the policy model (%.1fM parameters)",
            sum(p.numel() for p in frozen.parameters()) / 1e6,
        )
        return cls(frozen, tokenizer, **kwargs)

    def clear_cache(self) -> None:
        """Free the sampling engine's prefix cache (the runner calls this when a run ends)."""
        self.backend.clear_cache()

    def start(self, task: DomainTask, env: Environment) -> list[dict[str, str]]:
        return [{"role": "system", "content": user_system_prompt(task, with_tools=False)}]

    def reply(
        self, requests: list[UserRequest], seed: int | None = None
    ) -> list[UserMessage | BaseException]:
        results: list[UserMessage | BaseException | None] = [None] * len(requests)
        prompts, slots = [], []
        for i, (history, message) in enumerate(requests):
            if isinstance(message, list) or message.content is None:
                results[i] = ValueError("HFUser is text-only: it cannot answer tool results")
                continue
            history.append({"role": "user", "content": message.content})  # roles are flipped
            text = self.tokenizer.apply_chat_template(
                history, tokenize=False, add_generation_prompt=True
            )
            prompts.append(list(self.tokenizer(text, add_special_tokens=False)["input_ids"]))
            slots.append(i)
        with self._sampling_context():
            generations = self.backend.generate(prompts, self.sampling, seed=seed)
        for i, generation in zip(slots, generations, strict=True):
            text = self.tokenizer.decode(generation.token_ids, skip_special_tokens=True).strip()
            requests[i][0].append({"role": "assistant", "content": text})
            results[i] = UserMessage(role="user", content=text)
        return [r for r in results if r is not None]
