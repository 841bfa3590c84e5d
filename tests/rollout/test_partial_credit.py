"""Partial credit on real tau2 tasks, with episodes played by the scripted gold policy through
the real runner and scored by tau2's evaluators."""

from __future__ import annotations

import pytest

from tau2.continual_learning.rollout import CALL_PREFIX, EpisodeRunner, get_task, load_tasks
from tau2.continual_learning.rollout.partial_credit import credit_parts, partial_credit
from tau2.continual_learning.rollout.scripted import (
    ScriptedPolicy,
    ScriptedUser,
    gold_script,
    gold_turns,
)
from tau2.continual_learning.rollout.tool_format import RESPOND_TOOL, format_call


def _two_step_skill_task():
    """A telecom skill task with a lookup and a write (``[DB, ACTION]``): quick to score."""
    tasks = load_tasks("telecom", "train", task_source="skills")
    return next(t for t in tasks if len(t.task.evaluation_criteria.actions) == 2)


def _play(tokenizer, task, gold_calls: int | None, max_turns: int = 40):
    """One episode of ``task`` that makes its first ``gold_calls`` gold calls (all: ``None``)
    and then finishes as the gold replay does (``done``, or ``respond`` with no required
    information for a user task)."""
    turns = gold_turns(task)
    script = gold_script([task])
    keep = turns[:-1] if gold_calls is None else turns[:gold_calls]
    finish = turns[-1]
    if gold_calls is not None and not task.solo:  # without the information to communicate
        finish = format_call(RESPOND_TOOL, {"message": "Done."})

    def turn(context: str) -> str:
        chosen = script(context)
        return chosen if chosen in keep else finish

    policy = ScriptedPolicy(tokenizer, turn, prefix=CALL_PREFIX)
    user = None if task.solo else ScriptedUser()
    with EpisodeRunner(
        policy, user=user, max_turns=max_turns, max_context_tokens=65536, scoring_workers=0
    ) as runner:
        (episode,) = runner.run([task])
    return episode


def test_gold_replay_scores_the_maximum_and_an_empty_episode_the_minimum(tokenizer):
    task = _two_step_skill_task()
    gold = _play(tokenizer, task, None)
    assert gold.reward == 1.0 and partial_credit(gold) == 1.0
    assert credit_parts(gold) == {"actions": 1.0, "database": 1.0}
    empty = _play(tokenizer, task, 0)
    assert empty.termination_reason == "agent_stop" and empty.num_turns == 1
    assert empty.reward == 0.0 and partial_credit(empty) == 0.0


def test_a_half_right_episode_scores_in_between(tokenizer):
    """The lookup made, the write not: half the gold actions; the database check was skipped
    by the scorer (the action check already failed) and counts as not passed."""
    task = _two_step_skill_task()
    half = _play(tokenizer, task, 1)
    assert half.reward == 0.0
    assert credit_parts(half) == {"actions": 0.5, "database": 0.0}
    assert 0.0 < partial_credit(half) < 1.0


def test_tasks_without_recorded_action_checks_are_graded_by_tau2s_action_check(tokenizer):
    """tau2's retail tasks score DB x COMMUNICATE: the scorer records no action checks, so the
    share of gold actions comes from tau2's ActionEvaluator on the trajectory."""
    task = get_task("retail/2")
    gold_actions = len(task.task.evaluation_criteria.actions)
    assert gold_actions >= 2 and task.task.evaluation_criteria.communicate_info
    gold = _play(tokenizer, task, None)
    assert gold.reward == 1.0 and partial_credit(gold) == 1.0
    half = _play(tokenizer, task, gold_actions // 2)
    assert half.reward == 0.0 and half.reward_info["action_checks"] is None
    parts = credit_parts(half)
    # tau2 matches each gold action against any call: a repeated gold call counts twice
    assert (gold_actions // 2) / gold_actions <= parts["actions"] < 1.0
    assert parts["communicate"] == 0.0 and parts["database"] == 0.0
    assert 0.0 < partial_credit(half) < partial_credit(gold)
    empty = _play(tokenizer, task, 0)
    assert empty.reward == 0.0 and partial_credit(empty) == 0.0


@pytest.mark.parametrize(("gold_calls", "max_turns"), [(None, 2), (1, 1)])
def test_an_episode_tau2_does_not_score_gets_no_credit(tokenizer, gold_calls, max_turns):
    """Gold calls, then out of turns before ``done``: tau2 gives 0, and so does partial
    credit (no credit for never finishing)."""
    task = _two_step_skill_task()
    cut = _play(tokenizer, task, gold_calls, max_turns=max_turns)
    assert cut.termination_reason == "max_turns" and cut.reward == 0.0
    assert partial_credit(cut) == 0.0
