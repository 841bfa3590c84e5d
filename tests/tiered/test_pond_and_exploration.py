"""Pond ring, pouring into a lake, filling from it; the epsilon schedule."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from tau2.continual_learning.tiered import EpsilonSchedule, Lake, Pond


def test_pond_is_a_bounded_ring(fields, episode_stream):
    pond = Pond(5, fields, device="cpu")
    pond.add(episode_stream(0, [3]))
    pond.add(episode_stream(10, [4]))
    assert len(pond) == 5
    assert sorted(pond.data["action"].tolist()) == [2, 10, 11, 12, 13]  # the newest five
    drawn = pond.sample(64, torch.Generator().manual_seed(0))["action"]
    assert set(drawn.tolist()) <= {2, 10, 11, 12, 13}


def test_pond_pours_every_transition_in_chunks(tmp_path, fields, episode_stream):
    lake = Lake.create(tmp_path / "lake", 100, fields)
    pond = Pond(4, fields, device="cpu", lake=lake, chunk_size=3)
    batch = episode_stream(0, [5, 5])  # more than the ring holds, added at once
    pond.add(batch)
    assert (len(lake), pond.unpoured) == (9, 1)  # three chunks of three poured
    assert pond.pour() == 1
    assert (pond.added, pond.poured, len(lake)) == (10, 10, 10)
    out = lake.get(torch.arange(10))
    assert all(torch.equal(out[k], v) for k, v in batch.items())  # in order, nothing lost
    assert lake.frames_used == 12  # chunks of one stream still share their frames


def test_big_pond_fills_uniformly_from_the_lake(tmp_path, fields, episode_stream):
    lake = Lake.create(tmp_path / "lake", 100, fields)
    lake.extend(episode_stream(0, [20]))
    big = Pond(4000, fields, device="cpu")
    assert big.fill_from(lake, generator=torch.Generator().manual_seed(3)) == 4000
    counts = torch.bincount(big.data["action"], minlength=20)
    assert counts.numel() == 20
    assert chisquare(counts.numpy()).pvalue > 0.01
    assert big.fill_from(lake, 10) == 10 and len(big) == 10  # refilling replaces


def test_pond_state_round_trip(fields, episode_stream):
    pond = Pond(6, fields, device="cpu")
    pond.add(episode_stream(0, [4, 4]))
    other = Pond(6, fields, device="cpu")
    other.load_state_dict(pond.state_dict())
    assert len(other) == 6 and other.added == 8
    assert all(torch.equal(other.data[k], v) for k, v in pond.data.items())


def test_epsilon_schedule_is_piecewise_linear_and_resets():
    eps = EpsilonSchedule([(0, 1.0), (10, 0.1), (20, 0.01)])
    values = []
    for _ in range(25):
        values.append(round(eps.value(), 6))
        eps.step()
    assert values[0] == 1.0 and values[5] == 0.55 and values[10] == 0.1
    assert values[15] == pytest.approx(0.055) and values[24] == 0.01
    eps.reset(0.5)
    assert eps.value() == 0.5 and eps.resets == 1
    eps.step(10)
    assert eps.value() == pytest.approx(0.1)
    eps.reset()
    assert eps.value() == 1.0
    with pytest.raises(ValueError):
        EpsilonSchedule([(5, 1.0)])
    with pytest.raises(ValueError):
        eps.reset(1.5)
