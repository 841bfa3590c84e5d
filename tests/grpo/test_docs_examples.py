"""Every usage example of docs/replay.md works as written (with a small configuration)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import tau2.continual_learning as cl
from tau2.continual_learning.grpo.config import GRPOConfig
from tau2.continual_learning.report import statistics_banner
from tau2.scripts.train_grpo_cl import parse_config

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "replay.md").read_text()


def blocks(language: str) -> list[str]:
    """The fenced code blocks of the page tagged ``language`` ("" for untagged ones)."""
    found, current, tag = [], None, ""
    for line in DOC.splitlines():
        if line.startswith("```") and current is None:
            current, tag = [], line[3:].strip()
        elif line.startswith("```"):
            if tag == language:
                found.append("\n".join(current) + "\n")
            current = None
        elif current is not None:
            current.append(line)
    return found


@pytest.fixture
def small_grpo_config(tmp_path, tiny_model_dir, tiny_run, monkeypatch):
    """``GRPOConfig`` as the docs call it, shrunk to a seconds-long run with the tiny model."""
    small = {
        **tiny_run,
        "model_name_or_path": str(tiny_model_dir),
        "output_dir": str(tmp_path / "out"),
        "domains": ["telecom", "retail"],
        "max_steps_per_domain": 1,
        "eval_tasks_per_domain": 1,
    }
    for key in ("min_buffer_size", "replay_ratio"):  # the examples set their own
        small.pop(key)

    def make(**kwargs):
        return GRPOConfig(**{**small, **kwargs})

    monkeypatch.setattr(cl, "GRPOConfig", make)
    return make


def test_python_examples_run_as_written(small_grpo_config, capsys):
    namespace: dict = {}
    for code in blocks("python"):
        exec(compile(code, "docs/replay.md", "exec"), namespace)
    trainer = namespace["trainer"]
    assert type(trainer.cl_algorithm).__name__ == "AdaptiveReplayCL"
    assert trainer.accuracy_matrix and len(trainer.accuracy_matrix) == 2
    printed = capsys.readouterr().out
    assert "Total replay samples:" in printed and "Current ratio: " in printed
    history = trainer.cl_algorithm.get_statistics()["ratio_history"]  # probes act in the run
    assert history and history[0]["old"] == 0.2
    assert f"Current ratio: {history[-1]['new']}" in printed
    for name in ("CustomReplayCL", "SelectiveReplayCL"):
        assert isinstance(namespace[name], type)


def test_selective_replay_example_filters_by_reward(small_grpo_config):
    namespace: dict = {}
    for code in blocks("python"):
        if "class SelectiveReplayCL" in code or "import ReplayCL" in code:
            exec(compile(code.replace("trainer.train()", ""), "docs/replay.md", "exec"), namespace)
    trainer = namespace["trainer"]
    from tau2.continual_learning.grpo.trajectory_buffer import TrajectoryRecord
    from tau2.continual_learning.rollout import load_tasks

    for i, task in enumerate(load_tasks("telecom", "train", "skills")[:6]):
        trainer.trajectory_buffer.add(
            TrajectoryRecord(task=task, domain="telecom", reward=float(i % 2))
        )
    algorithm = namespace["SelectiveReplayCL"](replay_ratio=0.5, min_buffer_size=1)
    trainer.cl_algorithm = algorithm
    tasks = algorithm._sample_replay_tasks(["telecom"], 6)
    rewarded = {r.task.key for r in trainer.trajectory_buffer.records("telecom") if r.reward > 0.7}
    assert tasks and {t.key for t in tasks} <= rewarded


def command_lines() -> list[list[str]]:
    lines = []
    for block in blocks("bash"):
        for command in block.replace("\\\n", " ").splitlines():
            if command.strip():
                lines.append(shlex.split(command.split("#")[0]))
    return lines


def test_cli_examples_parse_into_configs():
    checked = 0
    for words in command_lines():
        if "tau2.scripts.train_grpo_cl" not in words:
            continue
        args = words[words.index("tau2.scripts.train_grpo_cl") + 1 :]
        config = parse_config(args)
        assert config.model_name_or_path == "Qwen/Qwen2.5-7B-Instruct"
        assert config.cl_algorithm in ("replay", "adaptive_replay")
        assert config.replay_ratio in (0.3, 0.2)
        if "--batch_size_per_gpu" in args:
            assert config.batch_size_per_gpu == 2
        checked += 1
    assert checked == 3


def test_replay_example_modes_are_the_documented_ones():
    modes = {w[2] for w in command_lines() if w[:2] == ["python", "configs/replay_example.py"]}
    assert modes == {"basic", "adaptive", "compare", "custom"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "configs" / "replay_example.py"), "bogus"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "basic|adaptive|compare|custom" in proc.stderr


def test_statistics_banner_matches_the_documented_one():
    documented = next(b for b in blocks("") if "Experience Replay Statistics" in b).strip()
    stats = {
        "total_replay_samples": 150,
        "replay_samples_per_domain": {"airline": 150},
        "buffer_sizes": {"airline": 320, "retail": 280},
    }
    assert statistics_banner("retail", stats) == documented
