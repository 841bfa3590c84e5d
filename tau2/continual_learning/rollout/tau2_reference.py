"""tau2's own ``evaluate_simulation`` as the reference the scorer is held to.

:mod:`~tau2.continual_learning.rollout.scoring` computes tau2's rewards without rebuilding
environments from disk; :func:`differences_from_tau2` scores one episode both ways and names
every difference, for the tests, ``scripts/check_gold_replay.py`` and
``benchmarks/scoring.py``. Importing tau2's evaluator imports its registry and litellm (a few
seconds), so this module is kept apart from the scorer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tau2.continual_learning.rollout.scoring import evaluate_environment, score_trajectory

if TYPE_CHECKING:
    from tau2.data_model.message import Message
    from tau2.data_model.simulation import RewardInfo
    from tau2.data_model.tasks import Task

ENV_BASES = ("DB", "ENV_ASSERTION")
"""The reward-basis entries that the environment evaluator decides."""


def reference_reward_info(
    domain: str, task: Task, messages: list[Message], termination_reason: str, solo_mode: bool
) -> RewardInfo:
    """tau2's ``evaluate_simulation`` (``EvaluationType.ALL``) of one finished episode; raises
    what it raises (``ValueError`` when a replayed tool result differs)."""
    from tau2.data_model.simulation import SimulationRun, TerminationReason
    from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation

    simulation = SimulationRun(
        id="reference",
        task_id=task.id,
        start_time="",
        end_time="",
        duration=0.0,
        termination_reason=TerminationReason(termination_reason),
        messages=messages,
    )
    return evaluate_simulation(
        simulation, task, EvaluationType.ALL, solo_mode=solo_mode, domain=domain
    )


def differences_from_tau2(
    domain: str, task: Task, messages: list[Message], termination_reason: str, solo_mode: bool
) -> list[str]:
    """Where scoring this episode differs from tau2's ``evaluate_simulation``: the reward of
    :func:`score_trajectory`, and :func:`evaluate_environment`'s database check, environment
    assertions and their reward breakdown. Where tau2 raises, the scorer must give reward 0
    and :func:`evaluate_environment` raise the same type. Empty when they agree."""
    reward, info = score_trajectory(domain, task, messages, termination_reason, solo_mode)
    try:
        expected = reference_reward_info(domain, task, messages, termination_reason, solo_mode)
    except Exception as exc:  # tau2 raises when a replayed tool result differs
        expected_error = type(exc).__name__
        raised = _raised(evaluate_environment, domain, task, messages, solo_mode)
        return [
            message
            for message, wrong in (
                (f"reward {reward} where tau2 raised {expected_error}", reward != 0.0),
                (
                    f"evaluate_environment: {raised}, tau2: {expected_error}",
                    raised != expected_error,
                ),
            )
            if wrong
        ]
    found: list[str] = []
    if reward != expected.reward:
        found.append(f"reward {reward} != tau2's {expected.reward}")
    expected_json = expected.model_dump(mode="json")
    if info.get("db_check") is not None and info["db_check"] != expected_json["db_check"]:
        found.append(f"score_trajectory db_check {info['db_check']} != {expected_json['db_check']}")
    if termination_reason not in ("agent_stop", "user_stop") or task.evaluation_criteria is None:
        return found
    env = evaluate_environment(domain, task, messages, solo_mode).model_dump(mode="json")
    breakdown = {
        k: v for k, v in (expected_json["reward_breakdown"] or {}).items() if k in ENV_BASES
    }
    for name, ours, theirs in (
        ("db_check", env["db_check"], expected_json["db_check"]),
        ("env_assertions", env["env_assertions"], expected_json["env_assertions"]),
        ("env reward_breakdown", env["reward_breakdown"] or {}, breakdown),
    ):
        if ours != theirs:
            found.append(f"evaluate_environment {name} {ours} != tau2's {theirs}")
    return found


def _raised(fn: Any, *args: Any) -> str:
    """The name of the exception type ``fn(*args)`` raises, ``"no exception"`` if none."""
    try:
        fn(*args)
    except Exception as exc:
        return type(exc).__name__
    return "no exception"
