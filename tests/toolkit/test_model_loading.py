"""The embedded default model, arbitrary model paths, and the tiny test model."""

from __future__ import annotations

import time

import pytest
import torch

from tau2.continual_learning import default_model
from tau2.continual_learning.model_loading import (
    ModelLoadError,
    load_model_and_tokenizer,
    resolve_model_path,
)
from tau2.continual_learning.tiny_model import build_tiny_model


def test_default_model_converts_from_gguf_when_cache_absent(tmp_path, monkeypatch):
    cache = tmp_path / "model-cache"
    monkeypatch.setenv(default_model.CACHE_ENV, str(cache))
    assert not default_model.is_cached(cache)
    model, tokenizer = load_model_and_tokenizer(None)
    assert default_model.is_cached(cache)
    assert {p.name for p in cache.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    }
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    assert getattr(model.config, "quantization_config", None) is None
    # no staging folders are left behind
    assert [p.name for p in tmp_path.iterdir()] == ["model-cache"]
    # the converted weights give the same logits as a second load from the cache
    ids = tokenizer("Hello", return_tensors="pt").input_ids
    with torch.no_grad():
        first = model(ids).logits
    reloaded, _ = load_model_and_tokenizer("SmolLM2-135M-Instruct")
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, first)


def test_default_model_loads_offline_from_cache(tokenizer, monkeypatch):
    # the session tokenizer fixture has populated the default cache
    assert default_model.is_cached()

    def forbidden(_target):  # loading from the cache must not touch the GGUF
        raise AssertionError("converted again although the cache is complete")

    monkeypatch.setattr(default_model, "convert_gguf", forbidden)
    start = time.perf_counter()
    model, tok = load_model_and_tokenizer(None)
    assert time.perf_counter() - start < 15
    assert tok.pad_token_id is not None and tok.padding_side == "left"
    messages = [{"role": "user", "content": "Say hi"}]
    prompt = tok.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]


def test_missing_model_path_is_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model_and_tokenizer(str(missing))
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model_path("./models/nothing-here")


def test_file_instead_of_folder_is_a_clear_error(tmp_path):
    file = tmp_path / "model.bin"
    file.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="is a file"):
        resolve_model_path(str(file))


def test_unknown_hub_id_offline_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        load_model_and_tokenizer("nobody-at-all/definitely-not-a-model-xyz")


def test_local_folder_loads(tmp_path, tokenizer, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, tok = load_model_and_tokenizer(str(tmp_path))
    assert model.config.hidden_size == tiny_model.config.hidden_size
    assert len(tok) == len(tokenizer)


def test_tiny_model_builds_fast_and_generates(tokenizer):
    build_tiny_model(tokenizer)  # warm imports
    start = time.perf_counter()
    model = build_tiny_model(tokenizer, seed=3)
    assert time.perf_counter() - start < 1.0
    prompt = tokenizer(["a tool call", "hi"], return_tensors="pt", padding=True)
    torch.manual_seed(0)
    out = model.generate(
        **prompt, max_new_tokens=6, do_sample=True, pad_token_id=tokenizer.pad_token_id
    )
    assert out.shape == (2, prompt["input_ids"].shape[1] + 6)
    assert int(out.max()) < len(tokenizer)


def test_tiny_model_is_deterministic(tokenizer):
    a = build_tiny_model(tokenizer, seed=1)
    b = build_tiny_model(tokenizer, seed=1)
    c = build_tiny_model(tokenizer, seed=2)
    wa, wb, wc = (m.model.embed_tokens.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
