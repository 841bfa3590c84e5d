"""Copy-on-write databases: episodes share one parsed database until their first write."""

from __future__ import annotations

from tau2.continual_learning.rollout import CALL_PREFIX, EpisodeRunner, get_task, load_tasks
from tau2.continual_learning.rollout.environments import (
    environment_constructor,
    new_environment,
    own_database_before,
    shared_database,
    shares_database,
)
from tau2.continual_learning.rollout.scripted import ScriptedPolicy, ScriptedUser, gold_script


def _pristine_hash(domain: str) -> str:
    return environment_constructor(domain)().get_db_hash()


def test_environments_share_until_a_write_and_the_writer_gets_its_own_copy():
    task = get_task("airline/7")
    assert task.task.initial_state is None
    (first, shared_1), (second, shared_2) = new_environment(task), new_environment(task)
    assert shared_1 and shared_2 and first.tools.db is second.tools.db
    assert own_database_before(first, "get_reservation_details")  # READ: still shared
    assert own_database_before(first, "no_such_tool")  # tau2 answers with an error
    assert first.tools.db is shared_database("airline", False)
    assert not own_database_before(first, "cancel_reservation")  # WRITE: a private copy
    assert first.tools.db is not second.tools.db
    assert first.get_db_hash() == second.get_db_hash()  # same content until the write runs


def test_gold_replays_with_writes_score_one_and_leave_the_shared_database_untouched(tokenizer):
    tasks = [get_task(k) for k in ("airline/7", "airline/12", "retail/2", "retail/33")]
    policy = ScriptedPolicy(tokenizer, gold_script(tasks), prefix=CALL_PREFIX)
    with EpisodeRunner(
        policy, user=ScriptedUser(), max_turns=40, max_context_tokens=65536, scoring_workers=0
    ) as runner:
        episodes = runner.run(tasks, num_generations=2)  # two episodes per task write
    assert [e.reward for e in episodes] == [1.0] * 8, [e.reward_info for e in episodes]
    for domain in ("airline", "retail"):
        shared = environment_constructor(domain)(db=shared_database(domain, False))
        assert shared.get_db_hash() == _pristine_hash(domain)


def test_stateful_domains_and_tasks_with_an_initial_state_get_fresh_environments():
    assert not shares_database("telecom", True) and not shares_database("telecom", False)
    assert shares_database("retail", False) and shares_database("mock", False)
    (telecom,) = load_tasks("telecom", "train", task_source="skills")[:1]
    assert new_environment(telecom)[1] is False
    with_state = get_task("mock/update_task_with_initialization_data")
    env, shared = new_environment(with_state)
    assert not shared and env.tools.db is not shared_database("mock", False)
    assert env.get_db_hash() != _pristine_hash("mock")  # its initial state was applied
    pristine = environment_constructor("mock")(db=shared_database("mock", False))
    assert pristine.get_db_hash() == _pristine_hash("mock")
