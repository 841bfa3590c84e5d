"""The pass-rate curriculum's task choice, on real skill tasks and real scored episodes."""

from __future__ import annotations

import pytest

from tau2.continual_learning.grpo.curriculum import PassRateCurriculum
from tau2.continual_learning.rollout import CALL_PREFIX, EpisodeRunner, load_tasks
from tau2.continual_learning.rollout.scripted import ScriptedPolicy, gold_script, gold_turns


@pytest.fixture(scope="module")
def tasks():
    return load_tasks("telecom", "train", task_source="skills")[:12]


def test_informative_tasks_come_first_then_unseen_then_the_rest(tasks):
    curriculum = PassRateCurriculum(seed=3)
    solved, failed, mixed = tasks[0:2], tasks[2:4], tasks[4:6]
    for task in solved:
        curriculum.record(task.key, 1.0)
    for task in failed:
        curriculum.record(task.key, 0.0)
    for task in mixed:
        for reward in (1.0, 0.0, 0.0):
            curriculum.record(task.key, reward)
    unseen = tasks[6:]
    assert curriculum.tier_counts(tasks) == {"informative": 2, "unseen": 6, "rest": 4}
    for step in range(5):
        chosen = curriculum.choose(tasks, 4, step)
        assert {t.key for t in chosen[:2]} == {t.key for t in mixed}
        assert {t.key for t in chosen[2:]} <= {t.key for t in unseen}
    everything = curriculum.choose(tasks, 100, 0)
    assert {t.key for t in everything[8:]} == {t.key for t in solved + failed}
    assert len({t.key for t in everything}) == len(tasks)


def test_the_choice_is_deterministic_per_seed_and_step_and_varies_within_a_tier(tasks):
    first = PassRateCurriculum(seed=0)
    again = PassRateCurriculum(seed=0)
    keys = [[t.key for t in first.choose(tasks, 3, step)] for step in range(6)]
    assert keys == [[t.key for t in again.choose(tasks, 3, step)] for step in range(6)]
    assert len({tuple(k) for k in keys}) > 1  # unseen tasks take turns over steps
    other = PassRateCurriculum(seed=1)
    assert keys != [[t.key for t in other.choose(tasks, 3, step)] for step in range(6)]


def test_the_window_lets_a_rate_follow_the_policy(tasks):
    curriculum = PassRateCurriculum(window=2)
    key = tasks[0].key
    for reward in (0.0, 1.0, 1.0):
        curriculum.record(key, reward)
    assert curriculum.success_rate(key) == 1.0 and curriculum.tier(key) == "rest"
    assert PassRateCurriculum().tier("never/seen") == "unseen"


def test_recorded_episodes_and_the_state_round_trip(tokenizer, tasks):
    """A gold replay (reward 1) and an episode that calls done at once (reward 0) of the same
    task make it informative; the state survives a checkpoint round trip."""
    task = tasks[0]
    turns = gold_turns(task)
    script = gold_script([task])
    outcomes = []
    for policy_script in (script, lambda context: turns[-1]):
        policy = ScriptedPolicy(tokenizer, policy_script, prefix=CALL_PREFIX)
        with EpisodeRunner(policy, max_turns=6, scoring_workers=0) as runner:
            outcomes += runner.run([task])
    assert [e.reward for e in outcomes] == [1.0, 0.0]
    curriculum = PassRateCurriculum(seed=5, window=4)
    curriculum.record_episodes(outcomes)
    assert curriculum.success_rate(task.key) == 0.5 and curriculum.tier(task.key) == "informative"
    restored = PassRateCurriculum()
    restored.load_state_dict(curriculum.state_dict())
    assert restored.state_dict() == curriculum.state_dict()
    assert [t.key for t in restored.choose(tasks, 5, 7)] == [
        t.key for t in curriculum.choose(tasks, 5, 7)
    ]
    assert restored.choose(tasks, 1, 0)[0].key == task.key


@pytest.mark.parametrize(
    ("kwargs", "call", "message"),
    [
        ({"window": 0}, None, "window"),
        ({}, ("record", "a", 1.5), r"reward for 'a' must be in \[0, 1\]"),
        ({}, ("choose", [], -1, 0), "count must be >= 0"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(kwargs, call, message):
    with pytest.raises(ValueError, match=message):
        curriculum = PassRateCurriculum(**kwargs)
        getattr(curriculum, call[0])(*call[1:])
