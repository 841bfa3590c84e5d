from __future__ import annotations

from collections import Counter

import pytest

from tau2.continual_learning.rollout import load_tasks
from tau2.continual_learning.rollout.tasks.skills import load_skill_tasks


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
