"""Lake: storage scheme, reopening, errors, uniform sampling."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from tau2.continual_learning.tiered import (
    Field,
    Lake,
    LakeEmptyError,
    LakeError,
    LakeFullError,
    LakeLockedError,
)


def test_round_trip_stores_each_frame_once(tmp_path, fields, episode_stream, frame_number):
    lake = Lake.create(tmp_path / "lake", 100, fields)
    batch = episode_stream(0, [5, 3, 7])
    assert lake.extend(batch) == 15
    assert len(lake) == 15
    assert lake.frames_used == 15 + 3  # one terminal frame per episode, no copies
    out = lake.get(torch.arange(15))
    for key, value in batch.items():
        assert torch.equal(out[key], value), key


def test_streams_link_across_extends_and_reopen(tmp_path, fields, episode_stream):
    batch = episode_stream(0, [10])
    with Lake.create(tmp_path / "lake", 100, fields) as lake:
        lake.extend({k: v[:4] for k, v in batch.items()})
    with Lake.open(tmp_path / "lake") as lake:  # a new run continues the same episode
        lake.extend({k: v[4:] for k, v in batch.items()})
        assert lake.frames_used == 11
        out = lake.get(torch.arange(10))
        assert all(torch.equal(out[k], v) for k, v in batch.items())
        other = episode_stream(50, [2])  # an unrelated stream starts a new run
        lake.extend(other)
        assert (len(lake), lake.frames_used) == (12, 14)
        assert torch.equal(lake.get(torch.tensor([11]))["next_obs"], other["next_obs"][1:])


def test_truncation_keeps_the_next_observation_of_the_cut(tmp_path, fields, episode_stream):
    """A stream that breaks without terminating still gets its true next observation."""
    lake = Lake.create(tmp_path / "lake", 100, fields)
    first, second = episode_stream(0, [6]), episode_stream(100, [6])
    cut = {k: v[:3] for k, v in first.items()}  # truncated episode: next obs is not stored next
    lake.extend(cut)
    lake.extend(second)
    out = lake.get(torch.arange(9))
    assert torch.equal(out["next_obs"][2], first["next_obs"][2])
    assert torch.equal(out["obs"][3], second["obs"][0])


def test_truncate_rolls_back(tmp_path, fields, episode_stream):
    lake = Lake.create(tmp_path / "lake", 100, fields)
    lake.extend(episode_stream(0, [4, 4]))
    lake.truncate(6)
    assert (len(lake), lake.frames_used) == (6, 8)
    lake.close()
    with Lake.open(tmp_path / "lake") as lake:
        assert len(lake) == 6
        lake.extend(episode_stream(100, [2]))
        assert torch.equal(lake.get(torch.tensor([7]))["action"], torch.tensor([101]))


def test_capacity_is_fixed_and_a_full_lake_loses_nothing(tmp_path, fields, episode_stream):
    lake = Lake.create(tmp_path / "lake", 10, fields)
    lake.extend(episode_stream(0, [8]))
    with pytest.raises(LakeFullError, match="does not fit"):
        lake.extend(episode_stream(100, [3]))
    assert len(lake) == 8
    assert torch.equal(lake.get(torch.arange(8))["action"], torch.arange(8))
    lake.extend(episode_stream(100, [2]))
    assert len(lake) == 10


def test_frame_capacity_counts_stored_frames(tmp_path, fields, episode_stream):
    lake = Lake.create(tmp_path / "lake", 10, fields, frame_capacity=6)
    with pytest.raises(LakeFullError):
        lake.extend(episode_stream(0, [1, 1, 1, 1]))  # 4 transitions need 8 frames
    assert lake.frames_used == 0


def test_bad_input_is_refused_with_a_clear_error(tmp_path, fields, episode_stream):
    lake = Lake.create(tmp_path / "lake", 10, fields)
    good = episode_stream(0, [2])
    with pytest.raises(TypeError, match="dtype"):
        lake.extend({**good, "obs": good["obs"].float()})
    with pytest.raises(ValueError, match="shape"):
        lake.extend({**good, "obs": good["obs"][:, :1]})
    with pytest.raises(ValueError, match="missing \\['reward'\\]"):
        lake.extend({k: v for k, v in good.items() if k != "reward"})
    with pytest.raises(ValueError, match="rows"):
        lake.extend({**good, "action": good["action"][:1]})
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        lake.extend({**good, "reward": [1.0, 1.0]})
    assert len(lake) == 0
    with pytest.raises(LakeEmptyError):
        lake.sample(4)
    with pytest.raises(ValueError):
        Lake.create(tmp_path / "other", 10, {"action": Field((), torch.int64)})
    with pytest.raises(FileExistsError):
        Lake.create(tmp_path / "lake", 10, fields)
    with pytest.raises(FileNotFoundError):
        Lake.open(tmp_path / "missing")


def test_one_writer_at_a_time(tmp_path, fields, episode_stream):
    lake = Lake.create(tmp_path / "lake", 10, fields)
    lake.extend(episode_stream(0, [3]))
    with pytest.raises(LakeLockedError):
        Lake.open(tmp_path / "lake")
    reader = Lake.open(tmp_path / "lake", readonly=True)
    assert len(reader) == 3
    with pytest.raises(LakeError, match="read-only"):
        reader.extend(episode_stream(10, [1]))
    lake.close()
    Lake.open(tmp_path / "lake").close()


def test_sampling_is_uniform_over_what_is_stored(tmp_path, fields, episode_stream):
    lake = Lake.create(tmp_path / "lake", 100, fields)
    lake.extend(episode_stream(0, [7, 1, 12, 20]))  # 40 transitions in runs of mixed lengths
    generator = torch.Generator().manual_seed(1234)
    draws = torch.cat([lake.sample(256, generator)["action"] for _ in range(40)])
    counts = torch.bincount(draws, minlength=40)
    assert counts.numel() == 40  # only stored transitions come out
    assert chisquare(counts.numpy()).pvalue > 0.01
