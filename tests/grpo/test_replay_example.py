"""configs/replay_example.py compare: three algorithms, one seed, a table in three formats."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_compare_prints_and_writes_the_table(tmp_path, tiny_model_dir):
    model_dir = tiny_model_dir
    out = tmp_path / "compare"
    flags = [
        "--model_name_or_path", str(model_dir),
        "--output_dir", str(out),
        "--domains", "telecom", "retail",
        "--max_steps_per_domain", "1",
        "--batch_size_per_gpu", "2",
        "--num_samples_per_prompt", "2",
        "--eval_tasks_per_domain", "1",
        "--max_turns", "1",
        "--max_new_tokens_per_turn", "8",
        "--min_buffer_size", "1",
        "--replay_ratio", "0.5",
        "--warm_start_demos_per_domain", "0",
        "--report_to", "none",
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(REPO / "configs" / "replay_example.py"), "compare", *flags],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    header = "| algorithm | ACC | BWT | FWT | forgetting | time_s |"
    assert header in proc.stdout
    for name in ("sequential", "replay", "adaptive_replay"):
        assert f"| {name} |" in proc.stdout
        assert (out / name / "metrics.json").is_file()
    assert header in (out / "comparison.md").read_text()
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert [r["algorithm"] for r in rows] == ["sequential", "replay", "adaptive_replay"]
