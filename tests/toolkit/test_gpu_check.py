"""scripts/gpu_check.py runs end to end with --tiny on a CPU: one JSON line per measurement."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


def test_gpu_check_smoke(capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    assert gpu_check.QWEN_SHAPES["qwen2.5-7b"]["hidden_size"] == 3584
    status = gpu_check.main(
        ["--tiny", "--models", "qwen2.5-1.5b", "--batch", "2", "--prompt_tokens", "16",
         "--new_tokens", "4", "--groups", "1", "--group_size", "2", "--turns", "1"]
    )  # fmt: skip
    assert status == 0
    lines = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if '"measure"' in line
    ]
    by_measure = {line["measure"]: line for line in lines}
    assert by_measure["hf_generation"]["tokens_per_s"] > 0
    assert by_measure["grpo_step"]["step_time_s"] > 0
