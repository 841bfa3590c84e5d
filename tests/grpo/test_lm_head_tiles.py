"""TRL's fused LM head in CPU-sized tiles: the same log-probs and gradients, and the trainer's
log-prob passes using them."""

from __future__ import annotations

import json

import pytest
import torch
from trl.trainer import utils as trl_utils
from trl.trainer.utils import add_fused_lm_head

from tau2.continual_learning.grpo import lm_head_tiles
from tau2.continual_learning.grpo.lm_head_tiles import CPU_TILE_COLUMNS, cpu_tiles
from tau2.continual_learning.tiny_model import build_tiny_model

TRL_WIDTH = 32768


@pytest.fixture
def widths(monkeypatch):
    """The tile width of every call of TRL's fused LM head."""
    seen: list[int] = []
    function = trl_utils._ChunkedLogProbFunction

    class Recording:
        @staticmethod
        def apply(hidden, weight, bias, targets, temperature, chunk_size, *rest):
            seen.append(chunk_size)
            return function.apply(hidden, weight, bias, targets, temperature, chunk_size, *rest)

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", Recording)
    return seen


def test_cpu_tiles_give_trls_log_probs_entropies_and_gradients(tokenizer, widths):
    model = build_tiny_model(tokenizer, seed=3).train()
    add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))
    input_ids = torch.randint(
        0, len(tokenizer), (3, 40), generator=torch.Generator().manual_seed(0)
    )

    def scored():
        out = model(input_ids=input_ids, labels=input_ids, fused_lm_head=True)
        loss = (
            out.log_probs * torch.linspace(-1, 1, out.log_probs.numel()).view_as(out.log_probs)
        ).sum()
        loss = loss + 0.1 * out.entropy.sum()
        grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
        return out.log_probs.detach(), out.entropy.detach(), grads

    plain = scored()
    with cpu_tiles(torch.device("cpu")):
        tiled = scored()
    assert widths == [TRL_WIDTH, CPU_TILE_COLUMNS]  # 48 tiles: the fold across them is exercised
    torch.testing.assert_close(tiled[0], plain[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(tiled[1], plain[1], rtol=0, atol=1e-5)
    for a, b in zip(tiled[2], plain[2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE == TRL_WIDTH  # restored on leaving


def test_other_devices_keep_trls_width():
    with cpu_tiles(torch.device("meta")):
        assert trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE == TRL_WIDTH


def test_a_trl_without_the_tile_width_constant_keeps_working(monkeypatch, caplog):
    monkeypatch.delattr(trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE")
    with caplog.at_level("WARNING", logger=lm_head_tiles.__name__), cpu_tiles(torch.device("cpu")):
        pass
    assert "tile width" in caplog.text


@pytest.mark.parametrize("shared", [True, False], ids=["shared-prefix", "trl-pass"])
def test_a_grpo_steps_log_prob_passes_use_cpu_tiles(tmp_path, tokenizer, tiny_run, widths, shared):
    from tau2.continual_learning import GRPOConfig, GRPOTrainer
    from tau2.continual_learning.grpo.trainer import REWARD_FIELD

    class AlternatingRewards(GRPOTrainer):  # the random model earns no reward: no gradient
        def rollout(self, prompts, engine=None):
            out = super().rollout(prompts, engine)
            out[REWARD_FIELD] = [float(i % 2) for i in range(len(out[REWARD_FIELD]))]
            return out

    settings = {**tiny_run, "domains": ["telecom"], "max_steps_per_domain": 1}
    settings.update(eval_tasks_per_domain=1, bf16=False, seed=0, replay_ratio=0.0)
    config = GRPOConfig(output_dir=str(tmp_path), shared_prefix=shared, **settings)
    AlternatingRewards(
        config, model=build_tiny_model(tokenizer, seed=1), tokenizer=tokenizer
    ).train()
    assert widths and set(widths) == {CPU_TILE_COLUMNS}


def test_the_benchmark_prints_a_line_per_token_count_and_width(load_benchmark, capsys):
    bench = load_benchmark("lm_head_tiles")
    lines = bench.main(["--tokens", "8", "16", "--widths", "32768", "1024", "--repeats", "1"])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == lines
    assert [(x["tokens"], x["columns"]) for x in lines] == [
        (8, 32768),
        (8, 1024),
        (16, 32768),
        (16, 1024),
    ]
    assert all(x["ms"] > 0 for x in lines)
    with pytest.raises(SystemExit):
        bench.main(["--widths", "0"])
