"""Defining properties of the insertion policies."""

import numpy as np
import pytest
from scipy.stats import chisquare

from tau2.continual_learning.supervised.memory import make_insertion_policy


def _stream(policy, buckets, scores=None):
    """Offer items 0..n-1; returns slot -> item id."""
    slots = {}
    for i, bucket in enumerate(buckets):
        slot = policy.add(bucket, None if scores is None else scores[i])
        if slot is not None:
            slots[slot] = i
    return slots


def test_reservoir_inclusion_probability_is_uniform():
    capacity, n, trials = 10, 100, 2000
    counts = np.zeros(n)
    for seed in range(trials):
        kept = _stream(make_insertion_policy("reservoir", capacity, seed), [0] * n)
        counts[list(kept.values())] += 1
    expected = trials * capacity / n
    assert counts.sum() == trials * capacity
    assert chisquare(counts, np.full(n, expected)).pvalue > 0.001
    # early and late items are kept equally often (the defining property vs. FIFO / naive)
    assert abs(counts[:20].mean() - counts[-20:].mean()) < 0.15 * expected


def test_fifo_keeps_the_most_recent_items():
    kept = _stream(make_insertion_policy("fifo", 5), [0] * 23)
    assert sorted(kept.values()) == list(range(18, 23))


def _imbalanced(n=1000, minority_every=10):
    return [1 if i % minority_every == 0 else 0 for i in range(n)]


def test_brs_balances_buckets_better_than_reservoir():
    stream = _imbalanced()
    gaps = {}
    for name in ("reservoir", "brs"):
        minority = []
        for seed in range(20):
            policy = make_insertion_policy(name, 50, seed)
            _stream(policy, stream)
            minority.append(policy.bucket_counts().get(1, 0))
        gaps[name] = np.mean(minority)
    assert gaps["reservoir"] == pytest.approx(5, abs=2)  # reservoir mirrors the 9:1 stream
    assert gaps["brs"] > 2 * gaps["reservoir"]  # BRS evicts from the majority bucket only


def test_class_balanced_reservoir_is_exactly_balanced():
    policy = make_insertion_policy("class_balanced", 50, 0)
    _stream(policy, _imbalanced())  # 100 minority items seen, more than the 25 share
    assert policy.bucket_counts() == {0: 25, 1: 25}


def test_class_balanced_is_uniform_within_a_bucket():
    counts = np.zeros(60)
    for seed in range(600):
        kept = _stream(make_insertion_policy("class_balanced", 10, seed), [0] * 30 + [1] * 30)
        ids = [i for i in kept.values() if i < 30]
        counts[ids] += 1
        assert len(ids) == 5
    assert chisquare(counts[:30], np.full(30, 600 * 5 / 30)).pvalue > 0.001


@pytest.mark.parametrize("name", ["lars", "brs_lars"])
def test_lars_prefers_low_loss_victims(name):
    survivors = {"low": 0, "high": 0}
    for seed in range(20):
        policy = make_insertion_policy(name, 100, seed)
        scores = [0.01 if i % 2 else 10.0 for i in range(100)]
        _stream(policy, [0] * 100, scores)
        for _ in range(300):
            policy.add(0, 1.0)
        originals = policy.scores
        survivors["low"] += int(np.sum(originals == 0.01))
        survivors["high"] += int(np.sum(originals == 10.0))
    assert survivors["high"] > 5 * max(survivors["low"], 1)


def test_update_scores_changes_which_items_lars_evicts():
    policy = make_insertion_policy("lars", 10, 0)
    _stream(policy, [0] * 10, [5.0] * 10)
    policy.update_scores([3], [1e-6])  # item 3 was replayed and is now easy
    victims = [policy._pick_victim() for _ in range(50)]
    assert victims.count(3) > 40
    with pytest.raises(ValueError, match="2 indices but 1 scores"):
        policy.update_scores([0, 1], [1.0])
    with pytest.raises(IndexError):
        policy.update_scores([10], [1.0])


@pytest.mark.parametrize("name", ["fifo", "reservoir", "brs", "lars", "brs_lars", "class_balanced"])
def test_state_dict_round_trip_continues_identically(name):
    a = make_insertion_policy(name, 8, 3)
    buckets = [i % 3 for i in range(40)]
    _stream(a, buckets[:20], [float(i) for i in range(20)])
    b = make_insertion_policy(name, 8, 99)
    b.load_state_dict(a.state_dict())
    rest = [(bk, float(i)) for i, bk in enumerate(buckets[20:])]
    assert [a.add(bk, s) for bk, s in rest] == [b.add(bk, s) for bk, s in rest]
    assert a.buckets == b.buckets


def test_bad_policy_arguments_are_named():
    with pytest.raises(ValueError, match="insertion policy 'lru' is unknown; allowed"):
        make_insertion_policy("lru", 10)
    with pytest.raises(ValueError, match="capacity must be a positive int, got 0"):
        make_insertion_policy("fifo", 0)
