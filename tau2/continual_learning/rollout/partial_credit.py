"""Partial credit: a graded training reward in [0, 1] from tau2's own reward breakdown.

tau2's reward is binary (the product of its checks), so a rollout that makes three of four
gold calls scores like one that makes none, and a GRPO group whose episodes all fail has no
signal. :func:`partial_credit` grades a failed episode by the parts of tau2's evaluation that
it passed, each part a share in [0, 1], averaged with equal weights:

* ``actions``: the share of the task's gold actions that some tool call of the episode matched
  (tau2's action check, per gold action). Counted whenever the task has gold actions, also
  when ``ACTION`` is not in its reward basis (tau2's airline and retail tasks): the calls that
  lead to the database change are what a failed rollout got partly right;
* ``communicate``: the share of ``communicate_info`` strings said (basis ``COMMUNICATE``);
* ``database``: tau2's database check, 1 or 0 (basis ``DB``);
* ``assertions``: the share of environment assertions that held (basis ``ENV_ASSERTION``).

A success (reward 1) gets 1.0; an episode that ended before tau2 scores it (``max_turns``,
...) or whose scoring raised gets 0.0, as tau2 gives it. The scorer skips the environment
check once a cheaper check already failed (:mod:`~tau2.continual_learning.rollout.scoring`):
then ``database`` and ``assertions`` count as 0 (not passed), and ``actions`` is read from the
recorded action checks, or computed with tau2's ``ActionEvaluator`` from the episode's
trajectory when the basis did not ask for them (no environment needed, microseconds).

Evaluation stays on tau2's binary reward; training may use ``reward + w * partial_credit``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tau2.continual_learning.rollout.scoring import SCORED_TERMINATIONS

if TYPE_CHECKING:
    from tau2.continual_learning.rollout.episode import Episode


def credit_parts(episode: Episode) -> dict[str, float]:
    """The graded parts of ``episode``'s evaluation (see the module docstring), each in
    [0, 1]; only the parts the task has."""
    from tau2.data_model.tasks import RewardType

    criteria = episode.task.task.evaluation_criteria
    info = episode.reward_info
    if criteria is None:
        return {}
    basis = set(criteria.reward_basis)
    parts: dict[str, float] = {}
    if criteria.actions:
        parts["actions"] = _share(
            check["action_match"] for check in _action_checks(episode, criteria.actions)
        )
    if RewardType.COMMUNICATE in basis and info.get("communicate_checks"):
        parts["communicate"] = _share(c["met"] for c in info["communicate_checks"])
    if RewardType.DB in basis:
        db_check = info.get("db_check")
        parts["database"] = float(db_check["db_reward"]) if db_check else 0.0
    if RewardType.ENV_ASSERTION in basis and criteria.env_assertions:
        assertions = info.get("env_assertions")
        parts["assertions"] = _share(a["met"] for a in assertions) if assertions else 0.0
    return parts


def partial_credit(episode: Episode) -> float:
    """``episode``'s partial credit in [0, 1]: 1.0 for a success, 0.0 for an episode tau2
    does not score, else the mean of :func:`credit_parts` (0.0 when there is none)."""
    if episode.reward >= 1.0:
        return 1.0
    if episode.termination_reason not in SCORED_TERMINATIONS or "error" in episode.reward_info:
        return 0.0
    parts = credit_parts(episode)
    return sum(parts.values()) / len(parts) if parts else 0.0


def _action_checks(episode: Episode, gold_actions: list[Any]) -> list[dict[str, Any]]:
    """The recorded action checks, else tau2's ``ActionEvaluator`` on the trajectory."""
    recorded = episode.reward_info.get("action_checks")
    if recorded is not None:
        return recorded
    from tau2.evaluator.evaluator_action import ActionEvaluator

    checks = ActionEvaluator.evaluate_actions(episode.messages, gold_actions)
    return [check.model_dump(mode="json") for check in checks]


def _share(flags: Any) -> float:
    values = [bool(flag) for flag in flags]
    return sum(values) / len(values) if values else 0.0
