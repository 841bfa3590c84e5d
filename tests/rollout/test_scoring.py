from __future__ import annotations

import pytest

from tau2.continual_learning.rollout import (
    CALL_PREFIX,
    EpisodeRunner,
    get_task,
    load_tasks,
    score_trajectory,
)
from tau2.continual_learning.rollout.scoring import Scorer
from tau2.continual_learning.rollout.scripted import (
    ScriptedPolicy,
    ScriptedUser,
    gold_script,
    gold_turns,
)


def _replay(tokenizer, tasks, user=None):
    policy = ScriptedPolicy(tokenizer, gold_script(tasks), prefix=CALL_PREFIX)
    with EpisodeRunner(
        policy, user=user, max_turns=40, max_context_tokens=65536, scoring_workers=0
    ) as runner:
        return runner.run(tasks)


@pytest.mark.parametrize("key", ["airline/7", "airline/12", "retail/2", "retail/33"])
def test_gold_replay_through_the_runner_scores_one(tokenizer, key):
    task = get_task(key)
    (episode,) = _replay(tokenizer, [task], ScriptedUser())
    assert episode.termination_reason == "user_stop"
    assert episode.reward == 1.0, episode.reward_info
    assert episode.num_turns == len(gold_turns(task))
    assert episode.reward_info["reward_breakdown"] == {"DB": 1.0, "COMMUNICATE": 1.0}


def test_a_corrupted_write_scores_zero(tokenizer):
    task = get_task("airline/7")
    turns = gold_turns(task)
    broken = turns[-2].replace('"reservation_id": "', '"reservation_id": "X')
    assert broken != turns[-2]
    script = gold_script([task])
    policy = ScriptedPolicy(
        tokenizer,
        lambda ctx: broken if script(ctx) == turns[-2] else script(ctx),
        prefix=CALL_PREFIX,
    )
    (episode,) = EpisodeRunner(
        policy, user=ScriptedUser(), max_turns=40, max_context_tokens=65536, scoring_workers=0
    ).run([task])
    assert episode.termination_reason == "user_stop" and episode.reward == 0.0


@pytest.mark.parametrize(
    ("key", "expected"),
    [("airline/0", 1.0), ("airline/7", 0.0), ("retail/10", 1.0), ("retail/2", 0.0)],
)
def test_empty_trajectory_scores_what_the_guide_says(key, expected):
    task = get_task(key)
    reward, info = score_trajectory(task.domain, task.task, [], "user_stop", solo_mode=False)
    assert reward == expected == info["reward"]
    assert task.trivial == (expected == 1.0)


def test_premature_termination_scores_zero_without_evaluating():
    task = get_task("airline/0")
    reward, info = score_trajectory("airline", task.task, [], "max_turns", solo_mode=False)
    assert reward == 0.0 and "max_turns" in info["info"]["note"]


def test_evaluator_exceptions_become_reward_zero():
    """The gold call with a forged tool result passes the action check, and tau2's environment
    replay then raises (the replayed result differs): reward 0 with the error."""
    from tau2.data_model.message import AssistantMessage, ToolCall, ToolMessage

    task = next(
        t
        for t in load_tasks("airline", "train", task_source="skills")
        if "DB" in t.task.evaluation_criteria.reward_basis
    )
    gold = task.task.evaluation_criteria.actions[-1]
    call = ToolCall(id="c0", name=gold.name, arguments=gold.arguments, requestor="assistant")
    forged = [
        AssistantMessage(role="assistant", tool_calls=[call]),
        ToolMessage(id="c0", role="tool", content='{"forged": true}'),
    ]
    reward, info = score_trajectory("airline", task.task, forged, "agent_stop", solo_mode=False)
    assert reward == 0.0 and info["error"].startswith("ValueError")


def test_telecom_ticket_task_replays_in_solo_mode(tokenizer):
    task = load_tasks("telecom", "train")[1]
    assert task.solo and task.env_solo_mode
    (episode,) = _replay(tokenizer, [task])
    assert episode.termination_reason == "agent_stop" and episode.reward == 1.0


def test_every_skill_gold_replay_scores_one_and_empty_scores_zero(tokenizer):
    tasks = [
        t
        for d in ("telecom", "retail")
        for s in ("train", "test")
        for t in load_tasks(d, s, task_source="skills")
    ][::12]
    tasks += load_tasks("airline", "train", task_source="skills")[:4]
    episodes = _replay(tokenizer, tasks)
    assert [e.reward for e in episodes] == [1.0] * len(tasks)
    assert max(len(e.prompt_ids) for e in episodes) <= 600
    with Scorer(0) as scorer:
        empty = [
            scorer.submit(t.domain, t.task, [], "agent_stop", False).result()[0] for t in tasks[:10]
        ]
    assert empty == [0.0] * 10


def test_environment_rewards_are_memoised_on_tool_calls_and_results(tokenizer):
    """A repeated trajectory reuses tau2's environment result (same reward info as an uncached
    evaluation); a trajectory whose tool results differ is evaluated anew."""
    from tau2.data_model.message import AssistantMessage, ToolMessage
    from tau2.evaluator.evaluator_env import EnvironmentEvaluator

    from tau2.continual_learning.rollout.environments import environment_constructor
    from tau2.continual_learning.rollout.scoring import environment_reward

    task = get_task("airline/12")
    environment_reward.cache_clear()
    (episode,) = _replay(tokenizer, [task], ScriptedUser())  # the runner scores it: one miss
    messages = episode.messages
    first = score_trajectory("airline", task.task, messages, "user_stop", solo_mode=False)
    # the same calls and results with other words around them are the same case for tau2
    reworded = [
        m.model_copy(update={"content": "other words"})
        if isinstance(m, AssistantMessage) and not m.is_tool_call()
        else m
        for m in messages
    ]
    again = score_trajectory("airline", task.task, reworded, "user_stop", solo_mode=False)
    after = environment_reward.cache_info()
    assert first[0] == again[0] == 1.0
    assert again[1]["db_check"] == first[1]["db_check"]
    assert (after.misses, after.hits) == (1, 2)
    uncached = EnvironmentEvaluator.calculate_reward(
        environment_constructor=environment_constructor("airline"),
        task=task.task,
        full_trajectory=messages,
        solo_mode=False,
    )
    assert first[1]["db_check"] == uncached.model_dump(mode="json")["db_check"]

    index = next(i for i, m in enumerate(messages) if isinstance(m, ToolMessage))
    tampered = list(messages)
    tampered[index] = messages[index].model_copy(update={"content": '{"forged": true}'})
    reward, info = score_trajectory("airline", task.task, tampered, "user_stop", solo_mode=False)
    assert reward == 0.0 and info["error"].startswith("ValueError")
    assert environment_reward.cache_info()[:2] == (after.hits, after.misses + 1)


def test_the_environment_check_is_skipped_once_the_action_check_failed():
    """A write task's empty trajectory fails tau2's action check, so the reward is 0 whatever
    the database says: the expensive environment evaluator is not run, and the reward info
    says so."""
    from tau2.continual_learning.rollout.scoring import ENV_SKIPPED, environment_reward

    task = next(
        t
        for t in load_tasks("airline", "train", task_source="skills")
        if "DB" in t.task.evaluation_criteria.reward_basis
    )
    misses = environment_reward.cache_info().misses
    reward, info = score_trajectory("airline", task.task, [], "agent_stop", solo_mode=False)
    assert reward == 0.0 and info["reward_breakdown"] == {"ACTION": 0.0}
    assert info["db_check"] is None and info["info"]["env"] == {"note": ENV_SKIPPED}
    assert environment_reward.cache_info().misses == misses
