"""Shared fixtures: offline mode, the real SmolLM2 tokenizer, and a tiny random model."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one thread per xdist worker (and its subprocesses): two torch processes that each use
    # every core slow each other down several times over
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest

import tau2.continual_learning  # noqa: F401  (import hygiene before any tau2 module)


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded model's tokenizer (converts the GGUF into the user cache on first use)."""
    from tau2.continual_learning.model_loading import load_tokenizer

    return load_tokenizer()


@pytest.fixture
def tiny_model(tokenizer):
    """A fresh tiny random Llama with the real vocabulary."""
    from tau2.continual_learning.tiny_model import build_tiny_model

    return build_tiny_model(tokenizer)
