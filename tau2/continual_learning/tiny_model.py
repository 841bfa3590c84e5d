"""A tiny random-initialised causal LM with the real SmolLM2 tokenizer, for tests and benchmarks.

It has the embedded model's architecture (Llama) and vocabulary, so prompts, chat templates and
token assembly behave as with the real model, but it builds in milliseconds and runs fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def build_tiny_model(
    tokenizer: PreTrainedTokenizerBase,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    num_key_value_heads: int | None = None,
    max_position_embeddings: int = 8192,
    seed: int = 0,
) -> PreTrainedModel:
    """A random Llama with ``tokenizer``'s vocabulary; deterministic for a given ``seed``.
    ``num_key_value_heads`` below ``num_heads`` gives grouped-query attention."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_key_value_heads or num_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()
