"""Batched multi-turn rollouts: many episodes advance together, one policy call per turn.

Each :meth:`EpisodeRunner.run` turn makes one batched user-model call for every episode
waiting on the user and one batched policy call for every episode waiting on the agent; each
episode owns a fresh environment. Finished episodes are scored by tau2's evaluators
(in a process pool when ``scoring_workers > 0``, overlapping later turns).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

from tqdm.auto import tqdm

from tau2.continual_learning.rollout.engines.base import Policy, SamplingParams
from tau2.continual_learning.rollout.environments import new_environment
from tau2.continual_learning.rollout.episode import (
    Episode,
    EpisodeLimits,
    EpisodeState,
    Termination,
    Waiting,
)
from tau2.continual_learning.rollout.prompt import ChatFormat
from tau2.continual_learning.rollout.scoring import Scorer
from tau2.continual_learning.rollout.tasks import DomainTask, system_prompt
from tau2.continual_learning.rollout.tool_format import (
    CALL_CLOSE,
    CALL_PREFIX,
)
from tau2.continual_learning.rollout.users import UserModel, resolve_user

logger = logging.getLogger(__name__)

SOLO_REMINDER = "If the ticket is resolved, call done. Otherwise make the next tool call."


class EpisodeRunner:
    """Runs tau2 episodes for a policy backend and returns GRPO-ready :class:`Episode` records.

    ``user``: ``None``/``"solo"`` (only ticket and skill tasks), or a
    :class:`~tau2.continual_learning.rollout.users.UserModel` (litellm or in-process HF).
    ``assistant_prefix`` is put at the start of every assistant turn on the prompt side (env
    tokens, never trained on); the default opens a tool call, so every turn is a call.
    ``solo_reminder`` follows the tool responses in solo episodes (a foothold for small
    models, which otherwise rarely call ``done``; ``""`` turns it off). ``stop_at_call_end`` ends a turn after its first ``</tool_call>`` (one call per turn;
    small models otherwise ramble on); the template's end-of-turn token is then added as an
    env token. ``max_tool_response_chars`` shortens long tool responses in what the model sees
    (head and tail; the scored trajectory keeps them whole).
    """

    def __init__(
        self,
        policy: Policy,
        *,
        user: UserModel | str | None = None,
        max_turns: int = 10,
        max_new_tokens_per_turn: int = 256,
        max_context_tokens: int = 8192,
        max_errors: int = 10,
        max_tool_response_chars: int | None = None,
        assistant_prefix: str = CALL_PREFIX,
        stop_at_call_end: bool = True,
        solo_reminder: str = SOLO_REMINDER,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        scoring_workers: int = 1,
        seed: int = 0,
        show_progress: bool = False,
    ) -> None:
        self.policy = policy
        self.user = resolve_user(user)
        self.limits = EpisodeLimits(
            max_turns,
            max_new_tokens_per_turn,
            max_context_tokens,
            max_errors,
            max_tool_response_chars,
        )
        stops = (CALL_CLOSE,) if stop_at_call_end else ()
        self.sampling = SamplingParams(max_new_tokens_per_turn, temperature, top_p, top_k, stops)
        self.assistant_prefix = assistant_prefix
        self.solo_reminder = solo_reminder
        self.chat = ChatFormat.from_tokenizer(policy.tokenizer)
        self.scorer = Scorer(scoring_workers)
        self.seed = seed
        self.show_progress = show_progress
        self._calls = 0

    def close(self) -> None:
        """Release the scoring pool."""
        self.scorer.close()

    def __enter__(self) -> EpisodeRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public ---------------------------------------------------------------------------
    def run(self, tasks: Sequence[DomainTask], num_generations: int = 1) -> list[Episode]:
        """Run ``num_generations`` episodes of every task; the result lists each task's
        episodes consecutively, in input order (GRPO groups). Never raises for what happens
        inside an episode."""
        if num_generations < 1:
            raise ValueError(f"num_generations must be >= 1, got {num_generations}")
        for task in tasks:
            if not isinstance(task, DomainTask):
                raise TypeError(
                    f"run() takes DomainTask objects (see load_tasks), got {type(task).__name__}"
                )
            if not task.solo and self.user is None:
                raise ValueError(
                    f"Task {task.key} needs a user simulator (it has no ticket); pass user=... "
                    "(LiteLLMUser or HFUser), or use ticket/skill tasks for solo mode."
                )
        self.scorer.start()  # before this run's buffers exist (see Scorer.start)
        try:
            return self._run(tasks, num_generations)
        finally:
            for backend in (self.policy, self.user):
                clear_cache = getattr(backend, "clear_cache", None)
                if clear_cache is not None:  # per-run state (HFPolicy's KV cache, HFUser's)
                    clear_cache()

    # -- internals ------------------------------------------------------------------------
    def _run(self, tasks: Sequence[DomainTask], num_generations: int) -> list[Episode]:
        states = [self._new_state(task, g) for task in tasks for g in range(num_generations)]
        futures: dict[int, Any] = {}
        progress = tqdm(
            total=len(states), desc="episodes", disable=not self.show_progress, leave=False
        )
        self._submit_finished(states, futures, progress)
        while len(futures) < len(states):
            asking = [s for s in states if s.waiting is Waiting.USER]
            if asking:
                self._user_step(asking)
            acting = [s for s in states if s.waiting is Waiting.AGENT]
            if acting:
                self._agent_step(acting)
            self._submit_finished(states, futures, progress)
        progress.close()
        episodes = []
        for index, state in enumerate(states):
            try:
                reward, info = futures[index].result()
            except Exception as exc:  # a broken worker process: only this episode loses
                reward, info = 0.0, {"reward": 0.0, "error": f"{type(exc).__name__}: {exc}"}
            if "error" in info and state.termination in (
                Termination.AGENT_STOP,
                Termination.USER_STOP,
            ):
                state.termination = Termination.SCORING_ERROR
            if state.error is not None:
                info = {**info, "episode_error": state.error}
            episodes.append(state.result(reward, info))
        logger.info(
            "Ran %d episodes: mean reward %.3f",
            len(episodes),
            sum(e.reward for e in episodes) / max(1, len(episodes)),
        )
        return episodes

    def _new_state(self, task: DomainTask, generation_index: int) -> EpisodeState:
        state = EpisodeState(
            task=task,
            generation_index=generation_index,
            env=None,  # type: ignore[arg-type]
            chat=self.chat,
            system_prompt="",
            assistant_prefix=self.assistant_prefix,
            limits=self.limits,
            solo_reminder=self.solo_reminder,
        )

        def setup() -> None:
            state.system_prompt = system_prompt(task)
            state.env, state.shares_database = new_environment(task)
            state.start()
            if self.user is not None and not task.solo:
                state.user_state = self.user.start(task, state.env)

        _guarded(state, setup)
        return state

    def _next_seed(self) -> int:
        self._calls += 1
        return self.seed * 1_000_003 + self._calls

    def _agent_step(self, acting: list[EpisodeState]) -> None:
        generations = self.policy.generate(
            [s.context_ids() for s in acting], self.sampling, seed=self._next_seed()
        )
        for state, generation in zip(acting, generations, strict=True):
            _guarded(state, functools.partial(state.apply_generation, generation))

    def _user_step(self, asking: list[EpisodeState]) -> None:
        assert self.user is not None
        replies = self.user.reply(
            [(s.user_state, s.to_user) for s in asking], seed=self._next_seed()
        )
        for state, reply in zip(asking, replies, strict=True):
            if isinstance(reply, BaseException):
                state.finish(Termination.USER_ERROR, f"{type(reply).__name__}: {reply}")
            else:
                _guarded(state, functools.partial(state.apply_user_message, reply))

    def _submit_finished(
        self, states: list[EpisodeState], futures: dict[int, Any], progress: tqdm
    ) -> None:
        for index, state in enumerate(states):
            if state.waiting is Waiting.DONE and index not in futures:
                assert state.termination is not None
                futures[index] = self.scorer.submit(
                    state.task.environment_domain,
                    state.task.task,
                    state.messages,
                    state.termination.value,
                    state.task.env_solo_mode,
                )
                state.env = None  # type: ignore[assignment]  # free its DB (airline: ~25 MB)
                progress.update(1)


def _guarded(state: EpisodeState, step: Callable[[], None]) -> None:
    """Run one episode step; an exception ends that episode (``crash``) instead of the run."""
    try:
        step()
    except Exception as exc:
        logger.warning(
            "Episode %s crashed: %s: %s",
            state.task.key,
            type(exc).__name__,
            exc,
            exc_info=logger.isEnabledFor(logging.DEBUG),
        )
        state.finish(Termination.CRASH, f"{type(exc).__name__}: {exc}")
