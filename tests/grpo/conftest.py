"""Shared settings for seconds-long continual GRPO runs with the tiny model."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

TINY_RUN = dict(
    domains=["retail", "telecom"],
    batch_size_per_gpu=2,
    num_samples_per_prompt=2,
    eval_tasks_per_domain=2,
    max_turns=1,
    max_new_tokens_per_turn=8,
    min_buffer_size=1,
    replay_ratio=0.5,
    warm_start_demos_per_domain=0,
    use_peft=False,
    learning_rate=1e-5,
    report_to=[],
)


@pytest.fixture
def tiny_run() -> dict:
    """GRPOConfig keyword arguments for a small two-domain run (a fresh copy per test)."""
    return dict(TINY_RUN)


@pytest.fixture
def tiny_model_dir(tmp_path, tokenizer, tiny_model):
    """The tiny model saved as a model folder, for ``--model_name_or_path``."""
    folder = tmp_path / "tiny"
    tiny_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _tiny_benchmark_settings(eval_tasks: int, demos: int) -> list[str]:
    """``--set`` arguments that make a benchmark script's runs seconds long with the tiny model."""
    settings = {
        "max_turns": 1,
        "max_new_tokens_per_turn": 8,
        "eval_tasks_per_domain": eval_tasks,
        "warm_start_demos_per_domain": demos,
        "num_samples_per_prompt": 2,
        "batch_size_per_gpu": 1,
    }
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def _load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module (benchmarks/ is not a package)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    if str(path.parent) not in sys.path:  # as `python benchmarks/<name>.py` does: _cli.py
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark(name)``: ``benchmarks/<name>.py`` as a module."""
    return _load_benchmark


@pytest.fixture(scope="session")
def tiny_benchmark_settings():
    """``tiny_benchmark_settings(eval_tasks, demos)``: ``--set`` arguments for seconds-long
    benchmark runs with the tiny model."""
    return _tiny_benchmark_settings
