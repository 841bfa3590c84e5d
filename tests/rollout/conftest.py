"""Shared fixtures: the real SmolLM2 tokenizer and a tiny random model built from it."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tau2.continual_learning import load_tokenizer
from tau2.continual_learning.tiny_model import build_tiny_model


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    return build_tiny_model(tokenizer)


@pytest.fixture(scope="session")
def turn_ending_model(tokenizer):
    """The tiny model with a bias towards the end-of-turn token, so that sampled turns end
    after a few tokens and episodes go through several turns."""
    import torch

    model = build_tiny_model(tokenizer, seed=2)
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[tokenizer.eos_token_id] = 10.0
    model.config.tie_word_embeddings = False
    model.lm_head = head
    return model


@pytest.fixture(scope="session")
def sharp_model(tokenizer):
    """A tiny grouped-query model with sharp attention: a token computed at a wrong position or
    over the wrong keys moves its log-probs far beyond test tolerances (the plain tiny model's
    near-uniform outputs would hide such errors)."""
    import torch

    model = build_tiny_model(tokenizer, num_heads=4, num_key_value_heads=2, seed=7)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(12)
            layer.self_attn.k_proj.weight.mul_(12)
    return model
