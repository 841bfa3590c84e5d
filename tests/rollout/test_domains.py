from __future__ import annotations

import pytest

from tau2.continual_learning.rollout import (
    available_domains,
    get_task,
    load_tasks,
    policy_text,
    tool_schemas,
)
from tau2.continual_learning.rollout.tasks.tau2_official import TRIVIAL_TASK_IDS


def test_available_domains():
    assert available_domains() == [
        *("airline", "retail", "telecom", "mock"),
        *("airline_v2", "retail_v2", "telecom_v2"),
    ]


@pytest.mark.parametrize(
    ("domain", "split", "count"),
    [
        ("airline", "train", 30),
        ("airline", "test", 20),
        ("retail", "train", 74),
        ("retail", "test", 40),
        ("telecom", "train", 74),
        ("telecom", "test", 40),
        ("mock", "base", 9),
    ],
)
def test_official_splits(domain, split, count):
    tasks = load_tasks(domain, split)
    assert len(tasks) == count
    assert all(t.domain == domain and t.source == "tau2" for t in tasks)
    assert all(t.key == f"{domain}/{t.task.id}" for t in tasks)


def test_train_and_test_are_disjoint():
    for domain in ("airline", "retail", "telecom"):
        train = {t.key for t in load_tasks(domain, "train")}
        test = {t.key for t in load_tasks(domain, "test")}
        assert train and test and not train & test


def test_solo_only_where_tasks_have_tickets():
    assert not any(t.solo for t in load_tasks("airline", "train"))
    assert all(t.solo and t.env_solo_mode for t in load_tasks("telecom", "train"))


def test_trivial_flags_match_the_guide():
    for domain, expected in (("airline", 19), ("retail", 7)):
        tasks = load_tasks(domain, "base")
        assert sum(t.trivial for t in tasks) == expected == len(TRIVIAL_TASK_IDS[domain])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: load_tasks("banking"), "valid domains: airline, retail, telecom, mock"),
        (lambda: load_tasks("airline", "dev"), "valid splits: train, test, base"),
        (lambda: load_tasks("airline", task_source="web"), "valid: tau2, skills"),
        (lambda: get_task("airline/999"), "valid ids: 0, 1, 2"),
        (
            lambda: load_tasks("mock", "train", task_source="skills"),
            "no domain 'mock'; its domains: airline, retail, telecom, airline_v2",
        ),
        (lambda: load_tasks("retail", "base", task_source="skills"), "valid splits: train, test"),
    ],
)
def test_unknown_names_list_the_valid_ones(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_tool_schemas_are_cached_and_solo_adds_user_tools():
    first = tool_schemas("airline")
    assert [s["name"] for s in first] == [s["name"] for s in tool_schemas("airline")]
    assert len(first) == 14
    assert len(tool_schemas("telecom", solo_mode=True)) > len(tool_schemas("telecom"))
    assert "Airline" in policy_text("airline") or "airline" in policy_text("airline")


def test_get_task_returns_the_official_task():
    task = get_task("retail/2")
    assert task.task.id == "2" and task.domain == "retail" and not task.trivial
    assert get_task("airline/0").trivial
