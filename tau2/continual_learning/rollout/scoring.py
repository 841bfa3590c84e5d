"""Rewards from tau2's own evaluators, computed offline, inline or in a process pool.

:func:`score_trajectory` does what ``tau2.evaluator.evaluator.evaluate_simulation`` does for
``EvaluationType.ALL`` (multiply the evaluators named in the task's ``reward_basis``) but calls
the environment, action and communicate evaluators directly, so neither the registry nor
litellm is imported, and it skips evaluators outside the basis (their result would be
discarded). This module does not import torch, so pool workers start quickly.

The environment check is the expensive one. tau2's ``EnvironmentEvaluator`` parses the domain's
database from disk twice per episode (the episode's replay and the gold environment) and hashes
both. Here (:func:`evaluate_environment`, equal to tau2's result, tested) the gold
environment's hashes are computed once per task (:func:`gold_database_hashes`), and the replay
starts on the process's parsed database, copied only when a replayed call may write (a replay
that only reads hashes as that database, whose hash is also computed once). The check runs
last, and only when the cheap action and communicate checks passed: the reward is their
product, so a failed check makes it 0 whatever the database says (``reward_info`` then has no
``db_check``, and ``info["env"]`` says why). Its result is a pure function of the task and of
the trajectory's tool calls and tool results (tau2 replays exactly those), so
:func:`environment_reward` memoises it on them: GRPO groups repeat the same trajectory, and a
task's successful trajectory recurs at every evaluation of the run.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import functools
import json
import logging
import multiprocessing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tau2.continual_learning import hygiene
from tau2.continual_learning.rollout.environments import (
    environment_constructor,
    replay_environment,
    shared_database_hash,
)

hygiene.configure_tau2_environment()

if TYPE_CHECKING:
    from tau2.data_model.message import Message
    from tau2.data_model.simulation import RewardInfo
    from tau2.data_model.tasks import Task

logger = logging.getLogger(__name__)

POOL_ERRORS = (concurrent.futures.process.BrokenProcessPool, RuntimeError, OSError)
"""What a process pool raises when it cannot run work (a worker died, or it cannot fork)."""

SCORED_TERMINATIONS = frozenset({"agent_stop", "user_stop"})
"""Only these end reasons are scored; tau2 gives every other one reward 0."""

ENV_SKIPPED = "not evaluated: the action or communicate check already gave reward 0"
"""``reward_info["info"]["env"]["note"]`` of an episode whose environment check was skipped."""

ENVIRONMENT_REWARD_CACHE_SIZE = 4096
"""Environment-evaluator results kept per process (a few KB each)."""

GOLD_CACHE_SIZE = 4096
"""Tasks whose gold database hashes are kept per process (two short strings each)."""


@dataclass(frozen=True)
class EnvironmentCase:
    """One call of tau2's ``EnvironmentEvaluator``, equal to another exactly when tau2 would
    compute the same result: same domain, mode and task, and the same tool calls and tool
    results in the same order (``Environment.set_state`` replays only those and ignores every
    other message, except that solo mode refuses user messages)."""

    domain: str
    solo_mode: bool
    task_json: str
    trajectory_key: tuple
    task: Task = field(compare=False, repr=False)
    messages: list[Message] = field(compare=False, repr=False)

    @classmethod
    def of(
        cls, domain: str, task: Task, messages: list[Message], solo_mode: bool
    ) -> EnvironmentCase:
        from tau2.data_model.message import ToolMessage, UserMessage

        key: list[tuple] = []
        for message in messages:
            calls = getattr(message, "tool_calls", None)
            if calls:
                key.append(
                    (
                        message.role,
                        tuple(
                            (c.id, c.name, json.dumps(c.arguments, sort_keys=True), c.requestor)
                            for c in calls
                        ),
                    )
                )
            elif isinstance(message, ToolMessage):
                key.append(("tool", message.id, message.content))
            elif isinstance(message, UserMessage):
                key.append(("user",))
        return cls(domain, solo_mode, task.model_dump_json(), tuple(key), task, messages)


@functools.lru_cache(maxsize=ENVIRONMENT_REWARD_CACHE_SIZE)
def environment_reward(case: EnvironmentCase) -> RewardInfo:
    """:func:`evaluate_environment` for ``case``, memoised per process
    (``environment_reward.cache_info()`` counts hits; exceptions are not cached). The result
    is shared between hits: read it, do not modify it."""
    return evaluate_environment(case.domain, case.task, case.messages, case.solo_mode)


@dataclass(frozen=True)
class GoldCase:
    """A task's gold environment. tau2 builds it from the domain and the task alone (never in
    solo mode, whatever the episode's mode), so its database hashes are a function of these."""

    domain: str
    task_json: str
    task: Task = field(compare=False, repr=False)


@functools.lru_cache(maxsize=GOLD_CACHE_SIZE)
def gold_database_hashes(case: GoldCase) -> tuple[str | None, str | None]:
    """The (agent, user) database hashes of the task's gold environment, built as tau2's
    ``EnvironmentEvaluator`` builds it (the task's initial state, then its gold actions through
    ``make_tool_call``, a failing action only logged) with tau2's own calls, once per task and
    process."""
    task = case.task
    history = list(task.initial_state.message_history or []) if task.initial_state else []
    actions = task.evaluation_criteria.actions or []
    data, init_actions = _initialization(task)
    env, shared = replay_environment(
        case.domain,
        False,
        [*_tool_names(history), *(a.name for a in actions)],
        initializes=data is not None or init_actions is not None,
    )
    env.set_state(
        initialization_data=data, initialization_actions=init_actions, message_history=history
    )
    for action in actions:
        try:
            env.make_tool_call(
                tool_name=action.name, requestor=action.requestor, **action.arguments
            )
        except Exception as exc:  # tau2 only logs a failing gold action
            logger.warning("Gold action %s(%s) failed: %s", action.name, action.arguments, exc)
    agent_hash = shared_database_hash(case.domain, False) if shared else env.get_db_hash()
    return agent_hash, env.get_user_db_hash()


def evaluate_environment(
    domain: str, task: Task, messages: list[Message], solo_mode: bool
) -> RewardInfo:
    """What tau2's ``EnvironmentEvaluator.calculate_reward`` returns for this episode, without
    reading the database from disk or rebuilding the gold environment.

    Every step is tau2's own call (``set_state`` replays the episode and raises ``ValueError``
    when a replayed tool result differs, ``get_db_hash``, ``run_env_assertion``), in tau2's
    order. Only the function that strings them together is re-written here, because tau2's
    builds and hashes its gold environment inline, with no way to pass hashes computed before;
    tests hold its results equal to tau2's on gold replays and failing episodes."""
    from tau2.data_model.simulation import DBCheck, EnvAssertionCheck, RewardInfo
    from tau2.data_model.tasks import RewardType
    from tau2.evaluator.evaluator_env import EnvironmentEvaluator

    criteria = task.evaluation_criteria
    if criteria is None or (criteria.actions is None and criteria.env_assertions is None):
        return EnvironmentEvaluator.calculate_reward(  # it returns before building anything
            environment_constructor=environment_constructor(domain),
            task=task,
            full_trajectory=messages,
            solo_mode=solo_mode,
        )
    data, init_actions = _initialization(task)
    env, shared = replay_environment(
        domain,
        solo_mode,
        _tool_names(messages),
        initializes=data is not None or init_actions is not None,
    )
    env.set_state(
        initialization_data=data, initialization_actions=init_actions, message_history=messages
    )
    gold_agent_hash, gold_user_hash = gold_database_hashes(
        GoldCase(domain, task.model_dump_json(), task)
    )
    agent_hash = shared_database_hash(domain, solo_mode) if shared else env.get_db_hash()
    db_match = agent_hash == gold_agent_hash and env.get_user_db_hash() == gold_user_hash
    db_reward = 1.0 if db_match else 0.0
    checks = []
    assertion_reward = 1.0
    for assertion in criteria.env_assertions or []:
        met = env.run_env_assertion(assertion, raise_assertion_error=False)
        checks.append(
            EnvAssertionCheck(env_assertion=assertion, met=met, reward=1.0 if met else 0.0)
        )
        assertion_reward *= 1.0 if met else 0.0
    reward = 1.0
    breakdown = {}
    if RewardType.DB in criteria.reward_basis:
        breakdown[RewardType.DB] = db_reward
        reward *= db_reward
    if RewardType.ENV_ASSERTION in criteria.reward_basis:
        breakdown[RewardType.ENV_ASSERTION] = assertion_reward
        reward *= assertion_reward
    return RewardInfo(
        reward=reward,
        db_check=DBCheck(db_match=db_match, db_reward=db_reward),
        env_assertions=checks,
        reward_basis=criteria.reward_basis,
        reward_breakdown=breakdown,
    )


def _initialization(task: Task) -> tuple[Any, Any]:
    """The task's ``(initialization_data, initialization_actions)``, ``None`` where absent."""
    state = task.initial_state
    if state is None:
        return None, None
    return state.initialization_data, state.initialization_actions


def _tool_names(messages: list[Message]) -> list[str]:
    """Names of the tool calls in ``messages``, in order."""
    return [call.name for m in messages for call in (getattr(m, "tool_calls", None) or [])]


def score_trajectory(
    domain: str, task: Task, messages: list[Message], termination_reason: str, solo_mode: bool
) -> tuple[float, dict[str, Any]]:
    """``(reward, reward_info)`` for one finished episode; ``reward_info`` is tau2's
    ``RewardInfo`` as a JSON-able dict. Evaluator exceptions (e.g. a replayed tool result
    that differs) give reward 0 with ``reward_info["error"]`` set."""
    from tau2.data_model.simulation import RewardInfo
    from tau2.data_model.tasks import RewardType
    from tau2.evaluator.evaluator_action import ActionEvaluator
    from tau2.evaluator.evaluator_communicate import CommunicateEvaluator

    if termination_reason not in SCORED_TERMINATIONS:
        note = f"Simulation terminated prematurely. Termination reason: {termination_reason}"
        return 0.0, {"reward": 0.0, "info": {"note": note}}
    criteria = task.evaluation_criteria
    if criteria is None:
        return 1.0, {"reward": 1.0, "info": {"note": "No evaluation criteria"}}
    basis = set(criteria.reward_basis)
    if RewardType.NL_ASSERTION in basis:
        note = "NL_ASSERTION needs an LLM judge; not supported by the offline scorer"
        return 0.0, {"reward": 0.0, "error": note}
    try:
        parts: dict[str, RewardInfo] = {}
        if RewardType.ACTION in basis:
            parts["action"] = ActionEvaluator.calculate_reward(task=task, full_trajectory=messages)
        if RewardType.COMMUNICATE in basis:
            parts["communicate"] = CommunicateEvaluator.calculate_reward(
                task=task, full_trajectory=messages
            )
        env_needed = bool(basis & {RewardType.DB, RewardType.ENV_ASSERTION})
        if env_needed and all(part.reward > 0 for part in parts.values()):
            parts["env"] = environment_reward(EnvironmentCase.of(domain, task, messages, solo_mode))
    except Exception as exc:  # tau2 raises ValueError when a replayed tool result differs
        logger.warning("Scoring %s/%s failed: %s", domain, task.id, exc)
        return 0.0, {"reward": 0.0, "error": f"{type(exc).__name__}: {exc}"}
    reward = 1.0
    breakdown: dict[Any, float] = {}
    for part in parts.values():
        reward *= part.reward
        breakdown.update(part.reward_breakdown or {})
    env, action, comm = parts.get("env"), parts.get("action"), parts.get("communicate")
    info = RewardInfo(
        reward=reward,
        db_check=env.db_check if env else None,
        env_assertions=env.env_assertions if env else None,
        action_checks=action.action_checks if action else None,
        communicate_checks=comm.communicate_checks if comm else None,
        reward_basis=criteria.reward_basis,
        reward_breakdown=breakdown,
        info={name: part.info for name, part in parts.items()},
    )
    if env_needed and "env" not in parts:
        info.info["env"] = {"note": ENV_SKIPPED}
    return reward, info.model_dump(mode="json")


class Scorer:
    """Runs :func:`score_trajectory` inline (``workers=0``) or in a process pool (``workers>0``)
    so that scoring overlaps generation. Use as a context manager or call :meth:`close`.

    Workers are forked where the platform allows it (they only run tau2's evaluators, no
    torch), so scripts need no ``if __name__ == "__main__"`` guard; elsewhere they are
    spawned. If the pool breaks, scoring falls back to inline.
    """

    def __init__(self, workers: int = 0) -> None:
        if workers < 0:
            raise ValueError(f"scoring_workers must be >= 0 (0 = inline), got {workers}")
        self.workers = workers
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def submit(
        self,
        domain: str,
        task: Task,
        messages: list[Message],
        termination_reason: str,
        solo_mode: bool,
    ) -> concurrent.futures.Future:
        """A future of ``(reward, reward_info)``; inline scoring returns a completed future."""
        args = (domain, task, messages, termination_reason, solo_mode)
        pooled = self._pool_submit(score_trajectory, *args)
        if pooled is not None:
            return pooled
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_result(score_trajectory(*args))
        return future

    def start(self) -> None:
        """Fork the workers now (idempotent; no-op inline). A forked worker shares the
        caller's memory copy-on-write, so every page the caller writes afterwards is first
        copied (measured: writing 134 MB right after a fork took 0.33 s, 0.005 s before), and
        a pool forked mid-run taxed every key/value buffer written after it. Started before a
        run's buffers exist, the pool shares none of them."""
        started = self._pool_submit(int)
        if started is not None:
            try:
                started.result()
            except POOL_ERRORS as exc:
                self._score_inline(exc)

    def _pool_submit(self, fn: Any, *args: Any) -> concurrent.futures.Future | None:
        """``fn(*args)`` in the pool; ``None`` when scoring inline (also once the pool broke)."""
        if self.workers == 0:
            return None
        try:
            return self._get_pool().submit(fn, *args)
        except POOL_ERRORS as exc:
            self._score_inline(exc)
            return None

    def _score_inline(self, exc: BaseException) -> None:
        logger.warning("Scoring pool unusable (%s); scoring inline from now on", exc)
        self.close()
        self.workers = 0

    def _get_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=context,
                initializer=hygiene.configure_tau2_environment,
            )
        return self._pool

    def close(self) -> None:
        """Shut the pool down (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
