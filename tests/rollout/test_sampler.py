"""Token drawing by inverse cumulative distribution (rollout/sampler.py)."""

import math

import pytest
import torch

from tau2.continual_learning.rollout.engines.sampler import draw


def _draws(probs: list[float], n: int, seed: int = 0) -> torch.Tensor:
    logprobs = torch.tensor(probs).log().expand(n, -1)
    return draw(logprobs, generator=torch.Generator().manual_seed(seed))


def test_frequencies_match_the_distribution():
    probs = [0.5, 0.0, 0.25, 0.125, 0.0625, 0.0625, 0.0]
    n = 200_000
    counts = torch.bincount(_draws(probs, n), minlength=len(probs)).tolist()
    for p, count in zip(probs, counts, strict=True):
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(count - n * p) <= 5 * sigma + 1e-9, (probs, counts)


def test_tokens_without_mass_are_never_drawn():
    logprobs = torch.full((50_000, 6), float("-inf"))
    logprobs[:, 2] = 0.0  # all mass on one token in the middle
    logprobs[::2, 5] = math.log(1e-12)  # every other row: a tiny mass on the last token
    tokens = draw(logprobs, generator=torch.Generator().manual_seed(1))
    assert set(tokens.tolist()) <= {2, 5}
    only_last = torch.full((1000, 4), float("-inf"))
    only_last[:, 3] = 0.0
    assert draw(only_last).eq(3).all()


def test_unnormalised_rows_and_temperature_scale_alike():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    a = draw(logits.expand(20_000, -1), generator=torch.Generator().manual_seed(3))
    b = draw(logits.log_softmax(-1).expand(20_000, -1), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_seeded_draws_repeat():
    logprobs = torch.randn(8, 1000).log_softmax(-1)
    torch.manual_seed(5)
    first = draw(logprobs)
    torch.manual_seed(5)
    assert torch.equal(first, draw(logprobs))


@pytest.mark.parametrize("bad", [float("nan"), float("-inf")])
def test_a_row_without_finite_mass_is_an_error(bad):
    logprobs = torch.zeros(3, 5)
    logprobs[1] = bad
    with pytest.raises(ValueError, match="no finite entry"):
        draw(logprobs)
    with pytest.raises(ValueError, match="rows, vocab"):
        draw(torch.zeros(5))
