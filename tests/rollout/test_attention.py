"""Sampling attention: the grouped-matmul path for short queries equals transformers' SDPA."""

from __future__ import annotations

import pytest
import torch

from tau2.continual_learning.rollout.engines.attention import (
    NAME,
    SHORT_QUERY,
    sampling_attention,
    short_query_attention,
)
from tau2.continual_learning.tiny_model import build_tiny_model


class _Module(torch.nn.Module):
    """What transformers' attention functions read from an attention layer."""

    is_causal = True

    def __init__(self, groups: int = 1) -> None:
        super().__init__()
        self.num_key_value_groups = groups


def _sdpa(query, key, value, mask):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = query.shape[1] // key.shape[1]
    return sdpa_attention_forward(_Module(groups), query, key, value, mask, scaling=0.3)[0]


@pytest.mark.parametrize("q_len", [1, 5, SHORT_QUERY])
@pytest.mark.parametrize("mask_kind", ["bool", "float", "causal"])
def test_short_queries_match_sdpa_with_grouped_heads(q_len, mask_kind):
    torch.manual_seed(q_len)
    batch, heads, kv_heads, dim = 3, 6, 2, 8
    kv_len = 20  # no mask ("causal"): SDPA's is_causal, queries aligned to the first keys
    query = torch.randn(batch, heads, q_len, dim)
    # keys/values as the cache holds them: views of larger buffers
    key = torch.randn(batch, kv_heads, kv_len + 7, dim)[:, :, :kv_len]
    value = torch.randn(batch, kv_heads, kv_len + 7, dim)[:, :, :kv_len]
    allowed = torch.ones(batch, 1, q_len, kv_len, dtype=torch.bool).tril(kv_len - q_len)
    allowed[1, :, :, :4] = False  # left padding of row 1
    mask = {
        "bool": allowed,
        "float": torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo().min),
        "causal": None,
    }[mask_kind]
    got, weights = short_query_attention(_Module(3), query, key, value, mask, scaling=0.3)
    assert weights is None and got.shape == (batch, q_len, heads, dim)
    assert torch.allclose(got, _sdpa(query, key, value, mask), atol=1e-5)


def test_long_queries_and_unusual_calls_are_sdpa_unchanged():
    torch.manual_seed(0)
    query = torch.randn(2, 4, SHORT_QUERY + 1, 8)
    key = value = torch.randn(2, 2, SHORT_QUERY + 1, 8)
    got, _ = short_query_attention(_Module(2), query, key, value, None, scaling=0.3)
    assert torch.equal(got, _sdpa(query, key, value, None))


def test_fully_masked_rows_give_finite_outputs():
    query, key, value = torch.randn(1, 2, 1, 4), torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    got, _ = short_query_attention(
        _Module(), query, key, value, torch.zeros(1, 1, 1, 3, dtype=torch.bool)
    )
    assert torch.isfinite(got).all()


def _gqa_model(tokenizer):
    return build_tiny_model(tokenizer, num_heads=4, num_key_value_heads=2)


def test_a_model_decodes_the_same_with_it_and_gets_its_attention_back(tokenizer):
    model = _gqa_model(tokenizer)
    ids = torch.randint(0, 64, (2, 12))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask).logits[:, -2:]
        with sampling_attention(model):
            assert model.config._attn_implementation == NAME
            past = model(input_ids=ids[:, :10], attention_mask=mask[:, :10], use_cache=True)
            got = model(
                input_ids=ids[:, 10:], attention_mask=mask, past_key_values=past.past_key_values
            ).logits
    assert model.config._attn_implementation == "sdpa"
    assert torch.allclose(got, reference, atol=1e-5)


def test_it_is_restored_after_an_error_and_leaves_other_implementations_alone(tokenizer):
    model = _gqa_model(tokenizer)
    with pytest.raises(RuntimeError), sampling_attention(model):
        raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"
    model.config._attn_implementation = "eager"
    with sampling_attention(model):
        assert model.config._attn_implementation == "eager"
