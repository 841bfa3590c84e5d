from __future__ import annotations

import json
from collections import Counter

import pytest

from tau2.continual_learning.rollout import load_tasks
from tau2.continual_learning.rollout.tasks.skills import (
    SKILL_DOMAINS,
    TEST_TASKS_PER_DOMAIN,
    load_skill_tasks,
)


@pytest.mark.parametrize("domain", ["airline", "retail", "telecom"])
def test_skill_tasks_are_real_deterministic_and_split(domain):
    train, test = (
        load_tasks(domain, "train", task_source="skills"),
        load_tasks(domain, "test", task_source="skills"),
    )
    assert len(train) > len(test) > 0
    assert not {t.key for t in train} & {t.key for t in test}
    kinds = Counter(t.task.evaluation_criteria.reward_basis[0].value for t in train)
    assert kinds["ACTION"] and kinds["DB"]  # lookups (ACTION) and writes (DB + ACTION)
    assert any(len(t.task.evaluation_criteria.actions) == 2 for t in train)  # two-step tasks
    for task in train + test:
        assert task.source == "skills" and task.solo and not task.env_solo_mode
        assert task.task.ticket and task.tool_names
        assert {a.name for a in task.task.evaluation_criteria.actions} <= set(task.tool_names)
    hinted = [t for t in train if t.key.endswith("-hint")]
    assert 0 < len(hinted) < len(train)
    assert all(
        t.task.ticket.endswith(f"Use {t.tool_names[0]}.") or " then " in t.task.ticket
        for t in hinted
    )
    assert [t.key for t in load_skill_tasks(domain, "train", seed=0)] == [t.key for t in train]
    assert [t.key for t in load_skill_tasks(domain, "train", seed=1)] != [t.key for t in train]


def _gold_action_set(task) -> frozenset[str]:
    """A task's gold calls as tau2's action check compares them (name and compared args)."""
    calls = set()
    for action in task.task.evaluation_criteria.actions:
        compared = action.compare_args
        args = {k: v for k, v in action.arguments.items() if compared is None or k in compared}
        calls.add(json.dumps([action.name, args], sort_keys=True))
    return frozenset(calls)


@pytest.mark.parametrize("domain", SKILL_DOMAINS)
def test_no_test_task_has_the_gold_actions_of_a_train_task(domain):
    """Across templates too: a customer's phone number is also a line's, so two telecom lookup
    templates can make the same call (skills seed 1 had such a pair split over train/test)."""
    for seed in range(4):
        train = load_skill_tasks(domain, "train", seed=seed)
        test = load_skill_tasks(domain, "test", seed=seed)
        assert len(test) == TEST_TASKS_PER_DOMAIN
        train_gold = {_gold_action_set(t) for t in train}
        leaked = [t.key for t in test if _gold_action_set(t) in train_gold]
        assert not leaked, f"seed {seed}: test tasks with a train task's gold actions: {leaked}"
