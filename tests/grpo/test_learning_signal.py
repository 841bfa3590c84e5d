"""Dynamic sampling and guided groups: which groups they touch, budgets, group sizes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.grpo.config import ConfigError
from tau2.continual_learning.grpo.learning_signal import (
    guide_failed_groups,
    is_informative,
    refill_uninformative,
)


def groups_of(*rewards):
    return [[SimpleNamespace(reward=r, tag=f"{i}") for r in g] for i, g in enumerate(rewards)]


def test_refill_replaces_exactly_the_replaceable_zero_variance_groups_within_budget():
    groups = groups_of((0, 0), (0, 1), (1, 1), (0, 0))
    fresh = iter([groups_of((1, 1)), groups_of((1, 0)), groups_of((0, 1))])
    asked = []

    def sample(n):
        asked.append(n)
        return next(fresh)

    result = refill_uninformative(groups, [True, True, False, True], sample, budget=5)
    assert [is_informative(g) for g in result.groups] == [True, True, False, True]
    assert result.groups[1] is groups[1] and result.groups[2] is groups[2]  # untouched
    assert result.replaced == 2 and result.extra_groups == 3 and asked == [2, 2, 1]
    assert len(result.groups) == len(groups)


def test_refill_stops_at_its_budget_and_when_tasks_run_out():
    groups = groups_of((0, 0), (0, 0))
    spent = refill_uninformative(groups, [True, True], lambda n: groups_of(*[(1, 1)] * n), 3)
    assert spent.extra_groups == 3 and spent.replaced == 0 and spent.groups == groups
    empty = refill_uninformative(groups, [True, True], lambda n: [], 3)
    assert empty.extra_groups == 0 and empty.groups == groups


def test_guided_groups_touch_only_all_fail_groups_and_keep_their_size():
    groups = groups_of((0, 0, 0), (0, 1, 0), (1, 1, 1))
    success = SimpleNamespace(reward=1.0, tag="gold")
    guided, count = guide_failed_groups(groups, lambda g: success)
    assert count == 1 and [len(g) for g in guided] == [3, 3, 3]
    assert guided[0][:2] == groups[0][:2] and guided[0][2] is success
    assert guided[1] is groups[1] and guided[2] is groups[2]
    unchanged, none = guide_failed_groups(groups, lambda g: None)
    assert none == 0 and unchanged == groups


@pytest.fixture
def run(tmp_path, tokenizer, tiny_model, tiny_run):
    def make(**overrides):
        settings = {**tiny_run, "domains": ["telecom"], "max_steps_per_domain": 1, **overrides}
        config = GRPOConfig(output_dir=str(tmp_path), **settings)
        return GRPOTrainer(config, model=tiny_model, tokenizer=tokenizer).train()

    return make


def test_guided_groups_put_a_gold_success_into_every_all_fail_group(run):
    (stats,) = run(guided_groups=True)["step_stats"]
    # the tiny random model never succeeds: every group is all-fail and gets its gold episode
    assert stats["informative_share_sampled"] == 0.0
    assert stats["guided_groups"] == stats["groups"] == 2
    assert stats["informative_share"] == 1.0 and stats["reward_mean"] == 0.5


def test_dynamic_sampling_spends_its_budget_on_uninformative_groups(run):
    (stats,) = run(dynamic_sampling_max_extra_groups=3)["step_stats"]
    assert stats["extra_groups"] == 3 and stats["replaced_groups"] == 0
    assert stats["groups"] == 2  # the step keeps its batch size


def test_dynamic_sampling_budget_must_be_a_non_negative_integer():
    with pytest.raises(ConfigError, match="dynamic_sampling_max_extra_groups=-1"):
        GRPOConfig(dynamic_sampling_max_extra_groups=-1)
